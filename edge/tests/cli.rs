//! The edge's command line: bad configuration exits with a message naming the flag.

use std::path::PathBuf;
use std::process::Command;

fn edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard-edge"))
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn check_prints_the_seed_scenario_routing_table() {
    let output = edge()
        .arg("--check")
        .arg("--phone-numbers")
        .arg(examples())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("number +15551230001"), "{stdout}");
    assert!(stdout.contains("refer=POST file://"), "{stdout}");
    assert!(stdout.contains("number +15551230002"), "{stdout}");
}

#[test]
fn a_bad_manifest_exits_naming_the_flag_file_and_field() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: switchyard.dev/v1alpha1\nkind: PhoneNumber\nmetadata: {name: x}\nspec: {phoneNumber: '1', voiceUrl: 'nope'}\n",
    )
    .unwrap();
    let output = edge().arg("--phone-numbers").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--phone-numbers"), "{stderr}");
    assert!(stderr.contains("bad.yaml, document 1"), "{stderr}");
    assert!(stderr.contains("spec.voiceUrl"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_named() {
    let output = edge()
        .args(["--check", "--phone-numbers", "x", "--timer-t1", "0s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--timer-t1"));

    let output = edge()
        .args([
            "--check",
            "--phone-numbers",
            "x",
            "--sip-listen",
            "not-an-address",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--sip-listen"));
}

#[test]
fn a_missing_required_flag_is_named() {
    let output = edge()
        .env_remove("SWITCHYARD_PHONE_NUMBERS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--phone-numbers"));
}

#[test]
fn bad_authentication_and_rate_limit_settings_exit_naming_the_flag() {
    let credentials = std::env::temp_dir().join(format!("cli-credentials-{}", std::process::id()));
    std::fs::write(&credentials, "alice:wonderland\n").unwrap();
    let file = credentials.to_str().unwrap();
    for (args, flag) in [
        (
            vec!["--auth-credentials", "/nonexistent/credentials"],
            "--auth-credentials",
        ),
        (vec!["--auth-credentials", file], "--auth-nonce-secret"),
        (
            vec![
                "--auth-credentials",
                file,
                "--auth-nonce-secret",
                "0123456789abcdef",
                "--auth-methods",
                "BYE",
            ],
            "--auth-methods",
        ),
        (
            vec!["--rate-limit-exempt", "trunk.example"],
            "--rate-limit-exempt",
        ),
        (vec!["--rate-limit-burst=0"], "--rate-limit-burst"),
    ] {
        let output = edge()
            .args(["--check", "--phone-numbers", "x"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_file(credentials);
}

#[test]
fn help_documents_each_redis_deployment_and_bad_urls_are_named() {
    let output = edge().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "redis+cluster://",
        "redis+sentinel://",
        "rediss://",
        "--redis-password",
        "--redis-sentinel-password",
        "[env: SWITCHYARD_REDIS_SENTINEL_PASSWORD]",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
    for (url, why) in [
        ("redis+sentinel://s1:26379", "names its master"),
        ("redis+cluster://h:7000/3", "database"),
        ("memcached://h", "unsupported scheme"),
    ] {
        let output = edge()
            .env_remove("SWITCHYARD_PHONE_NUMBERS")
            .args(["--redis-url", url])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--redis-url") && stderr.to_lowercase().contains(why),
            "{url}: {stderr}"
        );
    }
}
