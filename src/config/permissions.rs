//! Permissions of secret files: a file holding a token, a key or a TLS private key that every
//! user of the machine may read (or write) is reported by `weiche check` and logged by
//! `weiche serve` at start-up, naming the file and the mode — never its content.
//!
//! Only access by *other* users (`o+r`, `o+w`) is reported, and only when they can reach the
//! file: a directory on the way without `o+x` (e.g. a `0700` secrets directory) shuts them out.
//! Group access is not reported: `root:weiche` with mode `0640` is a sound way to let the
//! service's group read a secret that root owns.

use std::path::Path;

/// Mode bits that give every user access: read or write for "other".
const WORLD_ACCESS: u32 = 0o006;

/// The warning for a secret file that every user may read or write; `None` when the file is
/// private enough, missing, or the platform has no Unix modes.
pub fn loose_secret_file(path: &Path) -> Option<String> {
    let mode = mode_of(path)?;
    if mode & WORLD_ACCESS == 0 || !reachable_by_others(path) {
        return None;
    }
    let what = match (mode & 0o004 != 0, mode & 0o002 != 0) {
        (true, true) => "readable and writable",
        (true, false) => "readable",
        _ => "writable",
    };
    Some(format!(
        "secret file {} is {what} by every user (mode {:04o}); restrict it, e.g. chmod 600 {}",
        path.display(),
        mode,
        path.display()
    ))
}

/// The permission bits of a file (following symbolic links, as reading it does).
#[cfg(unix)]
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn mode_of(_path: &Path) -> Option<u32> {
    None
}

/// Whether every directory on the way to `path` lets other users pass (`o+x`).
fn reachable_by_others(path: &Path) -> bool {
    let Ok(full) = std::path::absolute(path) else {
        return true;
    };
    full.ancestors()
        .skip(1)
        .all(|dir| mode_of(dir).is_none_or(|m| m & 0o001 != 0))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn with_mode(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "00").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn world_access_is_reported_group_access_is_not() {
        let dir = tempfile::tempdir().unwrap();
        // Temporary directories are 0700; open it so that only the files' modes count.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for private in [0o600, 0o400, 0o640, 0o660, 0o700] {
            let p = with_mode(dir.path(), &format!("p{private:o}"), private);
            assert_eq!(loose_secret_file(&p), None, "{private:o}");
        }
        let p = with_mode(dir.path(), "open.token", 0o644);
        let w = loose_secret_file(&p).expect("0644 is reported");
        assert!(w.contains("open.token") && w.contains("0644") && w.contains("chmod 600"));
        assert!(w.contains("readable by every user"), "{w}");
        let p = with_mode(dir.path(), "w.token", 0o602);
        assert!(
            loose_secret_file(&p)
                .unwrap()
                .contains("writable by every user")
        );
        let p = with_mode(dir.path(), "rw.token", 0o666);
        assert!(
            loose_secret_file(&p)
                .unwrap()
                .contains("readable and writable")
        );
        assert_eq!(loose_secret_file(&dir.path().join("missing")), None);
    }

    #[test]
    fn a_closed_directory_shuts_other_users_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        let p = with_mode(&secrets, "a.token", 0o644);
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(loose_secret_file(&p).is_some());
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(loose_secret_file(&p), None);
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(loose_secret_file(&p), None);
    }

    #[test]
    fn the_warning_never_holds_the_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.path().join("t.token");
        std::fs::write(&p, "supersecret-token-value-0123456789abcdef").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!loose_secret_file(&p).unwrap().contains("supersecret"));
    }
}
