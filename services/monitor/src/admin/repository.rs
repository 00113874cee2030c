//! The model repository: where registered packages are kept, one immutable directory per
//! version, `{repository}/{model}/{version}/`.
//!
//! With a repository configured (`--repository`), registration copies the package there: into a
//! fresh staging directory inside the repository, regular files and directories only (a symlink
//! in a package is refused, so a copy never reaches outside it), then the model file's sha256 is
//! computed again on the copy and compared with the source's before the staging directory is
//! renamed into place (atomic on one filesystem). A version already in the repository is reused
//! when its model file has the same sha256, refused otherwise (versions are immutable).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Copies `src` (a verified package directory) to `{repository}/{model}/{version}` and checks
/// the copied `model_file` hashes to `sha256`. Returns the canonical destination. Blocking.
pub(super) fn store(
    src: &Path,
    repository: &Path,
    model: &str,
    version: &str,
    model_file: &str,
    sha256: &str,
    hash: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<PathBuf> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Internal(format!("model repository: {what} {}: {e}", p.display()))
    };
    let parent = repository.join(model);
    std::fs::create_dir_all(&parent).map_err(|e| io("creating", &parent, e))?;
    let dest = parent.join(version);
    if dest.exists() {
        let found = hash(&dest.join(model_file)).map_err(|e| io("reading", &dest, e))?;
        if found != sha256 {
            return Err(Error::AlreadyExists(format!(
                "{} already holds {model}/{version} with a different model file (sha256 {found}); \
                 versions are immutable, register a new version",
                dest.display()
            )));
        }
        return dest.canonicalize().map_err(|e| io("resolving", &dest, e));
    }
    let staging = parent.join(format!(
        ".incoming-{version}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = copy_dir(src, &staging).and_then(|()| {
        let copied = hash(&staging.join(model_file)).map_err(|e| io("reading", &staging, e))?;
        if copied != sha256 {
            return Err(Error::Internal(format!(
                "the copy of {model}/{version} hashes to {copied}, not {sha256}: the package changed while it was copied; register again"
            )));
        }
        std::fs::rename(&staging, &dest).map_err(|e| io("renaming into", &dest, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    dest.canonicalize().map_err(|e| io("resolving", &dest, e))
}

/// Copies a directory tree of regular files; symlinks and special files are refused.
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| {
        Error::Internal(format!("model repository: copying {}: {e}", p.display()))
    };
    std::fs::create_dir(dst).map_err(|e| io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let entry = entry.map_err(|e| io(src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| io(&from, e))?;
        if kind.is_dir() {
            copy_dir(&from, &to)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
        } else {
            return Err(Error::InvalidArgument(format!(
                "package entry {} is not a regular file or directory (symlinks are not accepted)",
                from.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_hash(p: &Path) -> std::io::Result<String> {
        Ok(format!("{:x}", std::fs::read(p)?.len()))
    }

    #[test]
    fn copies_verifies_reuses_and_refuses() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("model.onnx"), b"12345").unwrap();
        std::fs::create_dir(src.path().join("data")).unwrap();
        std::fs::write(src.path().join("data/ref.csv"), b"a").unwrap();
        let repo = tempfile::tempdir().unwrap();
        let dest = store(
            src.path(),
            repo.path(),
            "m",
            "1",
            "model.onnx",
            "5",
            fake_hash,
        )
        .unwrap();
        assert!(dest.starts_with(repo.path().canonicalize().unwrap()));
        assert_eq!(std::fs::read(dest.join("data/ref.csv")).unwrap(), b"a");
        // Same content again: reused.
        assert_eq!(
            store(
                src.path(),
                repo.path(),
                "m",
                "1",
                "model.onnx",
                "5",
                fake_hash
            )
            .unwrap(),
            dest
        );
        // Different content under the same version: refused.
        let err = store(
            src.path(),
            repo.path(),
            "m",
            "1",
            "model.onnx",
            "6",
            fake_hash,
        )
        .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
        // A copy that does not hash as expected is not kept.
        let err = store(
            src.path(),
            repo.path(),
            "m",
            "2",
            "model.onnx",
            "7",
            fake_hash,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
        assert!(!repo.path().join("m/2").exists());
        assert_eq!(std::fs::read_dir(repo.path().join("m")).unwrap().count(), 1);
        // Symlinks are refused.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
            let err = store(
                src.path(),
                repo.path(),
                "m",
                "3",
                "model.onnx",
                "5",
                fake_hash,
            )
            .unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        }
    }
}
