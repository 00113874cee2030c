//! Loading a model package named by a `ModelVersionRecord`.
//!
//! Guarantees: the package location is a local directory (a plain path or a `file://` URL),
//! inside the configured package root if there is one; the manifest names the same model and
//! version as the record; the model file is read once, and its SHA-256 must equal the record's
//! before those same bytes are parsed; and all blocking work (hashing, parsing, uploading weights) runs on tokio's
//! blocking pool, never on an async worker. A failure comes back as a [`LoadError`] whose text
//! becomes the FAILED replica's reason.

use std::path::{Path, PathBuf};

use kiln_coord::codec::ModelVersionRecord;
use kiln_model::{Backend, Manifest, Model};
use sha2::{Digest, Sha256};

/// Why a package could not be loaded (the text is published as the replica's reason).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The record is missing or unusable.
    #[error("{0}")]
    Record(String),
    /// The package location is not acceptable.
    #[error("package location {uri:?}: {reason}")]
    Location {
        /// The record's package URI.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The model file does not match the record's checksum.
    #[error("sha256 mismatch for {path}: record says {expected}, file has {actual}")]
    Checksum {
        /// The model file.
        path: String,
        /// The record's checksum.
        expected: String,
        /// The file's checksum.
        actual: String,
    },
    /// The package could not be read or does not fit the record.
    #[error("package {dir}: {reason}")]
    Package {
        /// The package directory.
        dir: String,
        /// What went wrong.
        reason: String,
    },
    /// The runtime refused the model.
    #[error("loading the model failed: {0}")]
    Model(#[from] kiln_model::ModelError),
}

/// Turns a record's `package_uri` into a directory: a plain path or `file://[localhost]/path`.
pub fn package_dir(uri: &str) -> Result<PathBuf, LoadError> {
    let bad = |reason: &str| LoadError::Location {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let path = if let Some(rest) = uri.strip_prefix("file://") {
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err(bad("a file:// URL needs an absolute path (file:///dir)"));
        }
        decode_percent(rest).ok_or_else(|| bad("malformed percent-encoding"))?
    } else if uri.contains("://") {
        return Err(bad("only local directories and file:// URLs are supported"));
    } else {
        uri.to_string()
    };
    if path.is_empty() {
        return Err(bad("empty"));
    }
    Ok(PathBuf::from(path))
}

fn decode_percent(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Hex SHA-256 of `bytes`, as records store it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Verifies and loads the package of `record` (blocking: [`load`] runs it on a thread).
pub fn load_blocking(
    record: &ModelVersionRecord,
    backend: Backend,
    package_root: Option<&Path>,
) -> Result<Model, LoadError> {
    let dir = package_dir(&record.package_uri)?;
    let pkg_err = |reason: String| LoadError::Package {
        dir: dir.display().to_string(),
        reason,
    };
    let canonical = dir
        .canonicalize()
        .map_err(|e| pkg_err(format!("cannot open: {e}")))?;
    if let Some(root) = package_root {
        let root = root
            .canonicalize()
            .map_err(|e| pkg_err(format!("package root {}: {e}", root.display())))?;
        if !canonical.starts_with(&root) {
            return Err(LoadError::Location {
                uri: record.package_uri.clone(),
                reason: format!("outside the package root {}", root.display()),
            });
        }
    }
    let manifest = Manifest::read(&canonical)?;
    if manifest.name != record.model || manifest.version != record.version {
        return Err(pkg_err(format!(
            "declares {}/{} but the record is {}/{}",
            manifest.name, manifest.version, record.model, record.version
        )));
    }
    let expected = record.sha256.trim().to_ascii_lowercase();
    if expected.is_empty() {
        return Err(LoadError::Record(format!(
            "record {}/{} has no sha256; refusing to load an unverified package",
            record.model, record.version
        )));
    }
    // Read once: the bytes that are hashed are the bytes that are loaded.
    // The model file must lie inside the package: no `..`, no symlink leading out of it.
    let model_file = canonical
        .join(&manifest.model_file)
        .canonicalize()
        .map_err(|e| pkg_err(format!("cannot open {}: {e}", manifest.model_file)))?;
    if !model_file.starts_with(&canonical) {
        return Err(LoadError::Location {
            uri: record.package_uri.clone(),
            reason: format!(
                "model file {} lies outside the package",
                manifest.model_file
            ),
        });
    }
    let bytes = std::fs::read(&model_file)
        .map_err(|e| pkg_err(format!("cannot read {}: {e}", model_file.display())))?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(LoadError::Checksum {
            path: model_file.display().to_string(),
            expected,
            actual,
        });
    }
    Ok(Model::from_parts(manifest, &bytes, backend)?)
}

/// Verifies and loads the package of `record` on a thread of its own.
pub async fn load(
    record: ModelVersionRecord,
    backend: Backend,
    package_root: Option<PathBuf>,
) -> Result<Model, LoadError> {
    // At the process's priority: a GPU backend starts its driver threads from here.
    let name = format!("kiln-load-{}-{}", record.model, record.version);
    crate::priority::run_blocking(name, move || {
        load_blocking(&record, backend, package_root.as_deref())
    })
    .await
    .map_err(|e| LoadError::Record(format!("the load thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_package_locations() {
        assert_eq!(
            package_dir("/m/digits/1").unwrap(),
            PathBuf::from("/m/digits/1")
        );
        assert_eq!(
            package_dir("file:///m/my%20models/1").unwrap(),
            PathBuf::from("/m/my models/1")
        );
        assert_eq!(
            package_dir("file://localhost/m/1").unwrap(),
            PathBuf::from("/m/1")
        );
        assert!(package_dir("s3://bucket/m/1").is_err());
        assert!(package_dir("file://relative/x").is_err());
        assert!(package_dir("").is_err());
    }

    #[test]
    fn hashes_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
