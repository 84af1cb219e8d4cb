//! Single-use credentials shared by processes (`examples/single_use.rs`, run as its own process,
//! which starts 8 client processes of itself): an agent whose unlock takes a credential that
//! works once and revokes the whole family when one is presented twice. The 8 processes, failing
//! together, unlock once: no credential is presented twice, and no session is lost.

#![cfg(target_os = "linux")]

mod cli_support;

#[test]
fn eight_processes_share_one_single_use_credential() {
    let output = std::process::Command::new(cli_support::example("single_use"))
        .arg("8")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("128 of 128 calls succeeded; 1 unlock(s); 0 credential(s) presented twice; family intact"),
        "{stdout}"
    );
}
