//! The baresip softphone (Debian package `baresip-core`) as a real SIP peer: a headless
//! instance with one auto-answering account, driven by menu commands on stdin, as
//! `../shared/softphones.md` describes.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::redis_server::free_ports;

pub struct Baresip {
    child: Child,
    stdin: ChildStdin,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// One second of 8 kHz mono 16-bit silence: the `aufile` source needs a WAV file.
fn silence_wav() -> Vec<u8> {
    let samples = 8_000u32;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8_000u32.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes()); // byte rate
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    wav
}

impl Baresip {
    /// Starts baresip as `user`, answering every call automatically.
    pub fn start(user: &str) -> Baresip {
        // baresip also listens on port + 1 (SIP over TLS), so take both.
        let port = free_ports(2);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let dir =
            std::env::temp_dir().join(format!("switchyard-baresip-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a baresip config directory");
        let d = dir.display();
        std::fs::write(dir.join("in.wav"), silence_wav()).expect("in.wav");
        std::fs::write(
            dir.join("config"),
            format!(
                "poll_method epoll\nsip_listen {addr}\nsip_transports udp\nnet_interface 127.0.0.1\n\
                 audio_player aufile,{d}/out.wav\naudio_source aufile,{d}/in.wav\naudio_alert aufile,{d}/alert.wav\n\
                 module_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule aufile.so\n\
                 module_app account.so\nmodule_app menu.so\n"
            ),
        )
        .expect("baresip config");
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{user}@127.0.0.1>;regint=0;answermode=auto\n"),
        )
        .expect("baresip accounts");
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(dir.join("log")).expect("a log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip on PATH (Debian package baresip-core)");
        let stdin = child.stdin.take().expect("baresip's stdin");
        // Ready once it has bound its SIP port.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(addr).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Baresip {
            child,
            stdin,
            addr,
            dir,
        }
    }

    /// Types a menu command (`/transfer sip:...`, `/hangup`).
    pub fn command(&mut self, line: &str) {
        let _ = writeln!(self.stdin, "{line}");
        let _ = self.stdin.flush();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            eprintln!("--- baresip log ---\n{log}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
