//! Where the examples keep their session file by default.

use std::path::PathBuf;

/// `agent-session` in the user's runtime directory (`$XDG_RUNTIME_DIR`), else in their config
/// directory (`$XDG_CONFIG_HOME`, `~/.config`), as agent CLIs keep theirs: never the current
/// directory, where the session file would land in whatever repository the example runs from.
pub fn default_session_dir() -> Option<PathBuf> {
    dirs::runtime_dir()
        .or_else(dirs::config_dir)
        .map(|dir| dir.join("agent-session"))
}

/// `AGENT_SESSION_DIR`, else [`default_session_dir`].
#[allow(dead_code)] // the client takes `AGENT_SESSION_DIR` through its flags
pub fn session_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("AGENT_SESSION_DIR")
        .map(PathBuf::from)
        .or_else(default_session_dir)
}
