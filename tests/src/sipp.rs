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

/// One sipp run: a UAC against a target, or a UAS waiting for one call.
pub struct Sipp {
    command: Command,
}

/// A sipp UAS running in the background.
pub struct RunningSipp {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl RunningSipp {
    /// Waits for sipp to finish (bounded) and returns its output; kills it on timeout.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait_with_output().expect("sipp output")
    }
}

/// The refusal scenario for one status code (sipp cannot take a variable in `recv`).
/// `check_reason`: the response must carry a `Reason` header with that cause.
pub fn refused_scenario(code: u16, check_reason: bool) -> PathBuf {
    let template = std::fs::read_to_string(scenario("uac_refused.template.xml"))
        .expect("the refusal scenario template");
    let text = template.replace("@CODE@", &code.to_string()).replace(
        "@CHECK_REASON@",
        if check_reason { "true" } else { "false" },
    );
    let path = std::env::temp_dir().join(format!(
        "switchyard-refused-{code}-{}-{}.xml",
        check_reason,
        std::process::id()
    ));
    std::fs::write(&path, text).expect("a scenario file in the temp dir");
    path
}

impl Sipp {
    /// A UAS on a free local port, waiting for one call.
    pub fn server(scenario_file: &str) -> RunningSipp {
        Self::server_with(scenario_file, &[])
    }

    /// A UAS with extra sipp arguments (`-set name value`, `-aa`, ...).
    pub fn server_with(scenario_file: &str, extra: &[&str]) -> RunningSipp {
        let port = free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args(["-m", "1", "-t", "u1", "-i", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args(["-timeout", "30s", "-timeout_error", "-nostdin"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sipp on PATH (Debian package sip-tester)");
        // Ready once sipp has bound its UDP port (binding it here then fails).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::UdpSocket::bind(addr).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        RunningSipp { child, addr }
    }

    /// A UAC running the scenario file at `path` (not under tests/scenarios).
    pub fn client_file(path: &std::path::Path, target: std::net::SocketAddr) -> Self {
        let mut sipp = Self::client("options.xml", target, SippTransport::Udp);
        let args: Vec<std::ffi::OsString> = sipp.command.get_args().map(|a| a.to_owned()).collect();
        let mut command = Command::new("sipp");
        command.arg("-sf").arg(path).args(&args[2..]);
        sipp.command = command;
        sipp
    }
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
