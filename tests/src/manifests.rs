//! PhoneNumber manifests and RCML files in a scratch directory, for edges started in
//! standalone mode (`--phone-numbers DIR`).

use std::path::{Path, PathBuf};

/// A new empty directory under the system temp dir, unique to this test process.
pub fn scratch_dir(purpose: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{purpose}-{}-{}",
        std::process::id(),
        crate::free_port()
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("a test file");
    path
}

/// A PhoneNumber `telephony/<name>` for `number` with `voiceUrl` and an optional
/// `referUrl`, written as `dir/<name>.yaml`.
pub fn phone_number(dir: &Path, name: &str, number: &str, voice: &str, refer: Option<&str>) {
    let refer = refer
        .map(|r| format!("  referUrl: {r}\n"))
        .unwrap_or_default();
    write(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "apiVersion: switchyard.dev/v1alpha1\nkind: PhoneNumber\nmetadata: {{name: {name}, namespace: telephony}}\nspec:\n  phoneNumber: \"{number}\"\n  voiceUrl: {voice}\n{refer}"
        ),
    );
}
