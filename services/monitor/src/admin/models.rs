//! RegisterModelVersion and ListModels.
//!
//! Registration reads a package from the monitor's filesystem: the request's
//! `record.package_uri` (a plain path or a `file://` URL) must name a directory holding
//! `kiln.toml`. The path is canonicalised (symlinks and `..` resolved) and, when a package root is
//! configured, must lie under it; the model file must lie inside the package. The stored record
//! takes its name, version, format and signature from the manifest, its `package_uri` is the
//! canonical absolute path (of the copy in the model repository when one is configured, see
//! [`super::repository`]), its `sha256` the hex digest of the model file and `size_bytes` its
//! size (the controller's memory estimate until a replica reports what it holds), its
//! `reference_profile_uri` the package's `reference.profile.pb` when present (else the raw
//! reference file of the manifest). Versions are
//! immutable: registering the same package again is a no-op, a different one is ALREADY_EXISTS.

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_coord::codec::{self, ModelVersionRecord, TensorSpec};
use kiln_coord::{Compare, Coordinator, TxnOp, TxnRequest, keys};
use kiln_model::Manifest;
use kiln_proto::kiln::v1::RegisterModelVersionRequest;
use sha2::{Digest, Sha256};

use super::{optional_segment, segment};
use crate::error::{Error, Result};

/// A package read from disk.
struct Package {
    dir: PathBuf,
    manifest: Manifest,
    sha256: String,
    size_bytes: u64,
}

pub(super) async fn register(
    coord: &dyn Coordinator,
    package_root: Option<&Path>,
    repository: Option<&Path>,
    req: RegisterModelVersionRequest,
) -> Result<ModelVersionRecord> {
    let asked = req
        .record
        .ok_or_else(|| Error::InvalidArgument("record is required".into()))?;
    let uri = asked.package_uri.trim();
    if uri.is_empty() {
        return Err(Error::InvalidArgument(
            "record.package_uri must name the package directory (a path on the monitor's filesystem)".into(),
        ));
    }
    let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
    let root = package_root.map(Path::to_path_buf);
    let pkg = tokio::task::spawn_blocking(move || read_package(&path, root.as_deref()))
        .await
        .map_err(|e| Error::Internal(format!("package reader panicked: {e}")))??;
    let m = &pkg.manifest;
    for (field, asked, found) in [
        ("model", &asked.model, &m.name),
        ("version", &asked.version, &m.version),
    ] {
        if !asked.is_empty() && asked != found {
            return Err(Error::InvalidArgument(format!(
                "record.{field} is {asked:?} but the package's kiln.toml says {found:?}"
            )));
        }
    }
    segment("model", &m.name)?;
    segment("version", &m.version)?;
    let dir = match repository {
        None => pkg.dir.clone(),
        Some(repo) => {
            let (src, repo) = (pkg.dir.clone(), repo.to_path_buf());
            let (name, version) = (m.name.clone(), m.version.clone());
            let (file, sha) = (m.model_file.clone(), pkg.sha256.clone());
            tokio::task::spawn_blocking(move || {
                super::repository::store(&src, &repo, &name, &version, &file, &sha, sha256_file)
            })
            .await
            .map_err(|e| Error::Internal(format!("package copy panicked: {e}")))??
        }
    };
    let spec = |t: &kiln_model::TensorSpec| TensorSpec {
        name: t.name.clone(),
        datatype: t.datatype.clone(),
        dims: t.dims.clone(),
    };
    let record = ModelVersionRecord {
        model: m.name.clone(),
        version: m.version.clone(),
        package_uri: dir.display().to_string(),
        sha256: pkg.sha256.clone(),
        format: m.format.clone(),
        inputs: m.inputs.iter().map(spec).collect(),
        outputs: m.outputs.iter().map(spec).collect(),
        reference_profile_uri: reference_uri(&dir, m),
        size_bytes: pkg.size_bytes,
    };

    let key = keys::model_version(&record.model, &record.version);
    let created = coord
        .txn(TxnRequest {
            compare: vec![Compare::Absent(key.clone())],
            success: vec![TxnOp::Put {
                key: key.clone(),
                value: codec::encode(&record),
                lease: 0,
            }],
            failure: vec![],
        })
        .await?;
    if created.succeeded {
        tracing::info!(model = %record.model, version = %record.version, package = %record.package_uri, sha256 = %record.sha256, "registered model version");
        return Ok(record);
    }
    let existing: ModelVersionRecord = codec::get(coord, &key)
        .await?
        .ok_or_else(|| Error::Conflict(format!("{key} changed during registration; retry")))?;
    if existing.sha256 == record.sha256 && existing.package_uri == record.package_uri {
        return Ok(existing);
    }
    Err(Error::AlreadyExists(format!(
        "{}/{} is already registered from {} (sha256 {}); versions are immutable, register a new version",
        existing.model, existing.version, existing.package_uri, existing.sha256
    )))
}

/// The package's reference profile: its `reference.profile.pb` (written by `kiln profile`) when
/// present, else the raw reference file its manifest names (profiled when a report loads it).
fn reference_uri(dir: &Path, m: &Manifest) -> String {
    let pb = dir.join(crate::reference::REFERENCE_PROFILE_FILE);
    if pb.is_file() {
        return pb.display().to_string();
    }
    m.reference
        .as_ref()
        .map(|r| dir.join(r).display().to_string())
        .unwrap_or_default()
}

/// Reads and checks a package directory (blocking file I/O).
fn read_package(path: &Path, root: Option<&Path>) -> Result<Package> {
    let shown = path.display();
    let dir = path
        .canonicalize()
        .map_err(|e| Error::InvalidArgument(format!("package {shown}: {e}")))?;
    if let Some(root) = root {
        let root = root
            .canonicalize()
            .map_err(|e| Error::Internal(format!("package root {}: {e}", root.display())))?;
        if !dir.starts_with(&root) {
            return Err(Error::PermissionDenied(format!(
                "package {} is outside the package root {}",
                dir.display(),
                root.display()
            )));
        }
    }
    if !dir.is_dir() || !dir.join("kiln.toml").is_file() {
        return Err(Error::InvalidArgument(format!(
            "package {} must be a directory containing kiln.toml",
            dir.display()
        )));
    }
    let manifest = Manifest::read(&dir)
        .map_err(|e| Error::InvalidArgument(format!("package {}: {e}", dir.display())))?;
    let file = dir.join(&manifest.model_file).canonicalize().map_err(|e| {
        Error::InvalidArgument(format!(
            "package {}: model file {:?}: {e}",
            dir.display(),
            manifest.model_file
        ))
    })?;
    if !file.starts_with(&dir) || !file.is_file() {
        return Err(Error::InvalidArgument(format!(
            "package {}: model file {:?} must be a file inside the package",
            dir.display(),
            manifest.model_file
        )));
    }
    let sha256 = sha256_file(&file)
        .map_err(|e| Error::Internal(format!("reading {}: {e}", file.display())))?;
    let size_bytes = file
        .metadata()
        .map_err(|e| Error::Internal(format!("reading {}: {e}", file.display())))?
        .len();
    Ok(Package {
        dir,
        manifest,
        sha256,
        size_bytes,
    })
}

/// Hex SHA-256 of a file, streamed.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub(super) async fn list(coord: &dyn Coordinator, model: &str) -> Result<Vec<ModelVersionRecord>> {
    optional_segment("model", model)?;
    let prefix = if model.is_empty() {
        keys::MODELS.to_string()
    } else {
        format!("{}{model}/", keys::MODELS)
    };
    Ok(codec::list(coord, &prefix).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1")
    }

    #[test]
    fn reads_the_demo_package() {
        let pkg = read_package(&digits(), None).unwrap();
        assert_eq!(pkg.manifest.name, "digits");
        assert!(pkg.dir.is_absolute());
        assert_eq!(pkg.sha256.len(), 64);
        assert_eq!(
            pkg.sha256,
            sha256_file(&pkg.dir.join("model.onnx")).unwrap()
        );
    }

    #[test]
    fn confines_packages_to_the_root() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        assert!(read_package(&digits(), Some(&models)).is_ok());
        let elsewhere = tempfile::tempdir().unwrap();
        let err = read_package(&digits(), Some(elsewhere.path()))
            .err()
            .unwrap();
        assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
        // `..` does not escape.
        let sneaky = models.join("digits/../../services");
        assert!(matches!(
            read_package(&sneaky, Some(&models)),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn rejects_what_is_not_a_package() {
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_package(empty.path(), None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            read_package(Path::new("/no/such/dir"), None),
            Err(Error::InvalidArgument(_))
        ));
        let file = digits().join("kiln.toml");
        assert!(matches!(
            read_package(&file, None),
            Err(Error::InvalidArgument(_))
        ));
    }
}
