//! Running the binary in a clean, isolated environment.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;

/// The `td-result-export` binary, freshly built.
///
/// Cargo builds another package's binaries only when that package's own tests run, so a plain
/// `cargo test -p tdre-tests` could run a stale binary (or none). The first call runs
/// `cargo build --bin td-result-export` into this test binary's own target dir and profile (a no-op
/// when it is up to date, as under `cargo test --workspace`).
pub fn operator_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "td-result-export",
                "--bin",
                "td-result-export",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building td-result-export failed");
        profile_dir.join(format!("td-result-export{}", std::env::consts::EXE_SUFFIX))
    })
}

/// Root of the repository (for `schema/` and `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A scratch directory that is the working directory and HOME of the commands it runs, so no
/// `TD_API_KEY`, `~/.td/td.conf` or `.td-local/` of the machine leaks into a test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file in the sandbox and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// The binary with an empty environment except HOME = the sandbox, run in the sandbox.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(operator_bin());
        cmd.env_clear().env("HOME", self.path()).current_dir(self.path());
        cmd
    }
}

/// A string shaped like a real TD API key (`<id>/<40 hex>`), distinct per `seed`.
pub fn fake_key(account: u32, seed: u8) -> String {
    format!("{account}/{}", format!("{seed:02x}").repeat(20))
}
