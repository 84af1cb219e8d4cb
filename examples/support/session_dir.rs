//! Where the examples keep their session file by default.

use std::path::PathBuf;

/// `agent-session` where the platform keeps a user's own state, as agent CLIs keep theirs: on
/// Windows `%LOCALAPPDATA%` (not roaming: a session is this machine's); on macOS
/// `~/Library/Application Support`; elsewhere the runtime directory (`$XDG_RUNTIME_DIR`), else
/// the config directory (`$XDG_CONFIG_HOME`, `~/.config`). Never the current directory, where
/// the session file would land in whatever repository the example runs from.
pub fn default_session_dir() -> Option<PathBuf> {
    let dir = if cfg!(windows) {
        dirs::data_local_dir()
    } else if cfg!(target_os = "macos") {
        dirs::data_dir()
    } else {
        dirs::runtime_dir().or_else(dirs::config_dir)
    };
    dir.map(|dir| dir.join("agent-session"))
}

/// `AGENT_SESSION_DIR`, else [`default_session_dir`].
#[allow(dead_code)] // the client takes `AGENT_SESSION_DIR` through its flags
pub fn session_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("AGENT_SESSION_DIR")
        .map(PathBuf::from)
        .or_else(default_session_dir)
}
