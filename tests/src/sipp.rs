//! Driving `sipp` (Debian package `sip-tester`) as a real SIP peer.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::free_port;
use crate::processes::repo_root;

/// A scenario file under `tests/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    repo_root().join("tests/scenarios").join(name)
}

/// Transport for sipp's `-t`.
#[derive(Clone, Copy, Debug)]
pub enum SippTransport {
    Udp,
    Tcp,
}

/// One sipp run as a UAC against `target`.
pub struct Sipp {
    command: Command,
}

impl Sipp {
    pub fn client(
        scenario_file: &str,
        target: std::net::SocketAddr,
        transport: SippTransport,
    ) -> Self {
        let mut command = Command::new("sipp");
        let local_ip = if target.is_ipv6() { "::1" } else { "127.0.0.1" };
        command
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args(["-m", "1"])
            .args([
                "-t",
                match transport {
                    SippTransport::Udp => "u1",
                    SippTransport::Tcp => "t1",
                },
            ])
            .args(["-i", local_ip])
            .args(["-p", &free_port().to_string()])
            .args(["-timeout", "15s", "-timeout_error"])
            .args(["-nostdin"])
            .arg(target.to_string());
        Sipp { command }
    }

    /// Sets a scenario variable (`-set name value`).
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.command.args(["-set", name, value]);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.command.arg(arg);
        self
    }

    /// Runs to completion; sipp exits 0 when every call succeeded.
    pub fn run(mut self) -> Output {
        let output = self
            .command
            .output()
            .expect("sipp on PATH (Debian package sip-tester)");
        std::thread::sleep(Duration::from_millis(1));
        output
    }
}

/// Asserts a sipp run succeeded, showing its output otherwise.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "sipp failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
