//! A run's claim, on this machine, to the bulk-import session of its export: a small file named
//! after the session, held under an exclusive `flock(2)` while the run writes the session.
//!
//! The kernel lets go of the lock when the process ends, however it ends (SIGKILL, OOM killer,
//! a py> runner killed with its whole process group). So a rerun that finds the file present and
//! its lock free knows the run that made the session crashed **on this machine**, and resumes it
//! at once instead of waiting for the session to stand still (`stale_after`). It needs no status
//! document, so it holds under py>, whose status document lives in a temporary directory.
//!
//! No claim (another machine, a directory that cannot be made) proves nothing: the run then
//! waits as before. A claim is advice that shortens a wait, never a lock on the export.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// What this run learned when it claimed its session.
pub(crate) enum Claimed {
    /// No run of this export on this machine left a claim.
    Fresh(Claim),
    /// A run of this export on this machine ended without letting go (its process is gone):
    /// nothing fills its session any more. The pid it wrote, when readable.
    Crashed(Claim, Option<u32>),
    /// A run of this export on this machine still holds the claim: it is alive.
    Held { pid: Option<u32> },
    /// The claim could not be taken (no usable directory): nothing is known.
    Unknown,
}

impl Claimed {
    /// The claim to hold while the session is written, if this run got one.
    pub(crate) fn into_claim(self) -> Option<Claim> {
        match self {
            Claimed::Fresh(c) | Claimed::Crashed(c, _) => Some(c),
            Claimed::Held { .. } | Claimed::Unknown => None,
        }
    }
}

/// A held claim. Dropping it removes the file, then lets go of the lock.
pub(crate) struct Claim {
    file: File,
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // The directory goes with its last claim; a run making a claim in it meanwhile retries.
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

/// Claims `session` in this user's run directory.
pub(crate) fn claim(session: &str) -> Claimed {
    match run_dir().and_then(|dir| claim_in(&dir, session)) {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::debug!(error = %e, "no claim on this machine; a crashed run is waited on");
            Claimed::Unknown
        }
    }
}

/// This user's directory for claims: under `$XDG_RUNTIME_DIR` (cleared at reboot, as pids are)
/// or else the temporary directory, private to the user.
fn run_dir() -> std::io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir());
    Ok(match base {
        Some(dir) => dir.join("td-result-export"),
        None => std::env::temp_dir().join(format!("td-result-export-{}", rustix::process::getuid().as_raw())),
    })
}

fn claim_in(dir: &Path, session: &str) -> std::io::Result<Claimed> {
    let path = dir.join(format!("{session}.claim"));
    // A few rounds: a run ending beside this one may remove the file or the directory between
    // two steps.
    for _ in 0..5 {
        make_private_dir(dir)?;
        match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                return Ok(match lock(&file)? {
                    true => Claimed::Fresh(hold(file, path)?),
                    // Another run opened it between our create and lock: it holds it.
                    false => Claimed::Held { pid: None },
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let mut file = match File::options().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !lock(&file)? {
            return Ok(Claimed::Held {
                pid: read_pid(&mut file),
            });
        }
        // Still the file at the path (not one a finishing run just removed)?
        let same =
            std::fs::metadata(&path).is_ok_and(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0));
        if !same {
            continue;
        }
        let pid = read_pid(&mut file);
        let claim = hold(file, path)?;
        // An empty file is one whose maker had not written its pid yet: no proof of a crash.
        return Ok(match pid {
            Some(pid) => Claimed::Crashed(claim, Some(pid)),
            None => Claimed::Fresh(claim),
        });
    }
    Err(std::io::Error::other("the claim kept changing under this run"))
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Not a link, and this user's: another user's directory proves nothing here.
            let meta = std::fs::symlink_metadata(dir)?;
            if meta.is_dir() && meta.uid() == rustix::process::getuid().as_raw() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "{} is not this user's directory",
                    dir.display()
                )))
            }
        }
        Err(e) => Err(e),
    }
}

/// Takes the lock without waiting: false when another process holds it.
fn lock(file: &File) -> std::io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn hold(mut file: File, path: PathBuf) -> std::io::Result<Claim> {
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(Claim { file, path })
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_fresh_then_held_then_gone_with_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let first = claim_in(&runs, "s1").unwrap();
        assert!(matches!(first, Claimed::Fresh(_)));
        match claim_in(&runs, "s1").unwrap() {
            Claimed::Held { pid } => assert_eq!(pid, Some(std::process::id())),
            _ => panic!("a live claim is held"),
        }
        drop(first);
        assert!(!runs.exists(), "the directory goes with its last claim");
        assert!(matches!(claim_in(&runs, "s1").unwrap(), Claimed::Fresh(_)));
    }

    #[test]
    fn a_claim_left_by_an_ended_process_reads_as_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("runs")).unwrap();
        std::fs::write(dir.path().join("runs/s2.claim"), "4242").unwrap();
        match claim_in(&dir.path().join("runs"), "s2").unwrap() {
            Claimed::Crashed(_, pid) => assert_eq!(pid, Some(4242)),
            _ => panic!("an unlocked claim with a pid is a crash"),
        }
    }

    #[test]
    fn an_empty_unlocked_claim_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("runs")).unwrap();
        std::fs::write(dir.path().join("runs/s3.claim"), "").unwrap();
        assert!(matches!(
            claim_in(&dir.path().join("runs"), "s3").unwrap(),
            Claimed::Fresh(_)
        ));
    }
}
