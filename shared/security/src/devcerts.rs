//! Development certificates: a CA and one certificate per process (`kiln certs dev`).
//!
//! Not for production (use your PKI or cert-manager, see docs/SECURITY.md): keys are ECDSA P-256
//! written unencrypted (mode 0600). Every leaf carries both `serverAuth` and `clientAuth`, since
//! Kiln processes use one identity for their server and for their outgoing calls, and names
//! `localhost`, `127.0.0.1`, `::1` and its own name plus any extra names given. Running it again
//! over the same directory keeps the CA (`ca.pem`, `ca.key`) and reissues the leaves, which is
//! how a rotation is rehearsed.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA's subject (fixed, so a reused CA key re-creates the same issuer).
const CA_NAME: &str = "Kiln development CA";

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Kiln");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(params)
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub dir: PathBuf,
    /// Whether the CA was created now (false: an existing one was reused).
    pub new_ca: bool,
    /// `<name>.pem` / `<name>.key` pairs written, by name.
    pub leaves: Vec<String>,
}

impl DevCerts {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// Writes (or reuses) the CA in `dir` and a certificate for each of `names`, valid for
/// `localhost`, loopback, the name itself and `extra_sans`.
pub fn write(dir: &Path, names: &[&str], extra_sans: &[String]) -> anyhow::Result<DevCerts> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let new_ca = !(ca_pem.exists() && ca_key_path.exists());
    let ca_key = if new_ca {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        fs::write(&ca_pem, cert.pem())?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        key
    } else {
        let pem = fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem).context("ca.key is not a PEM private key")?
    };
    let issuer = Issuer::new(ca_params()?, ca_key);
    for name in names {
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            (*name).to_owned(),
        ];
        sans.extend(extra_sans.iter().cloned());
        sans.dedup();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("kiln {name}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2034, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        write_private(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
    }
    Ok(DevCerts {
        dir: dir.to_owned(),
        new_ca,
        leaves: names.iter().map(|n| (*n).to_owned()).collect(),
    })
}
