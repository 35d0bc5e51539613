//! Dependencies with TLS switched on, for the tests of TLS to them: a certificate authority of
//! the test's own ([`TestCa`], made with rcgen), a PostgreSQL that accepts TLS connections only
//! ([`TlsPostgres`]) and a Redis that listens on TLS only ([`TlsRedis`]), each on a free port
//! under the test's folder (`.stack/tls/<test>-<id>/`, kept for its logs) and stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::chaos::{free_port, workspace_root, Proc};
use crate::postgres_process::{
    give_to_postgres, initdb, pg_ctl_start, postgres_bin, stop_immediate_and_remove,
};
use crate::wait_for_port;

/// A fresh folder for one test under `.stack/tls/`.
pub fn test_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join(".stack").join("tls").join(format!(
        "{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).expect("create the test's folder under .stack/tls");
    dir
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub cert_pem: String,
}

/// A certificate and its private key, PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where a certificate and its key were written.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("the CA's certificate");
        Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// A certificate for `common_name`, naming `names` (DNS names or IP addresses), signed by
    /// this CA: a server's (names its host) or a client's (PostgreSQL's `cert` authentication
    /// takes the user from the common name).
    pub fn issue(&self, common_name: &str, names: &[&str]) -> IssuedCert {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA's certificate to `dir/<name>` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).expect("write the CA certificate");
        path
    }
}

impl IssuedCert {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key` (the key readable by its owner only).
    pub fn write(&self, dir: &Path, stem: &str) -> CertFiles {
        use std::os::unix::fs::PermissionsExt;
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write a certificate");
        std::fs::write(&key, &self.key_pem).expect("write a key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("key permissions");
        CertFiles { cert, key }
    }
}

/// A PostgreSQL that takes TCP connections over TLS only, its certificate for `127.0.0.1`
/// and `localhost` signed by the test's CA. User `postgres` is trusted once on TLS; user
/// [`TlsPostgres::CLIENT_CERT_USER`] must present a client certificate signed by the same CA
/// with its name as common name (`hostssl … cert`).
pub struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
}

impl TlsPostgres {
    /// The user that signs in with a client certificate only.
    pub const CLIENT_CERT_USER: &'static str = "mailroom_client";

    /// Initialises a cluster under `dir/pg` and starts it.
    pub fn start(dir: &Path, ca: &TestCa) -> Self {
        let bin = postgres_bin();
        let dir = dir.join("pg");
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL folder");
        let data = dir.join("data");
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("create the server's TLS folder");
        let server = ca
            .issue("postgres-under-test", &["127.0.0.1", "localhost"])
            .write(&tls, "server");
        let ca_file = ca.write(&tls, "ca.crt");
        give_to_postgres(&dir);
        initdb(&bin, &data);
        // TCP on TLS only: a connection without TLS matches no line and is refused.
        let hba = format!(
            "local all all trust\n\
             hostssl all postgres 127.0.0.1/32 trust\n\
             hostssl all {} 127.0.0.1/32 cert\n",
            Self::CLIENT_CERT_USER
        );
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let pg = Self {
            bin,
            data,
            port: free_port(),
        };
        let log = dir.join("postgres.log");
        let options = format!(
            "-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} -c ssl_ca_file={ca}",
            port = pg.port,
            socket = dir.display(),
            cert = server.cert.display(),
            key = server.key.display(),
            ca = ca_file.display(),
        );
        pg_ctl_start(&pg.bin, &pg.data, &log, &options);
        let role = format!("CREATE ROLE {} LOGIN SUPERUSER", Self::CLIENT_CERT_USER);
        let status = Command::new("psql")
            .args(["-q", "-h"])
            .arg(&dir)
            .args(["-p", &pg.port.to_string(), "-U", "postgres", "-c", &role])
            .status()
            .expect("psql");
        assert!(status.success(), "create the client-certificate role");
        pg
    }

    /// The URL of database `postgres` as `user`, without TLS parameters.
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        stop_immediate_and_remove(&self.bin, &self.data);
    }
}

/// Whether a [`TlsRedis`] asks its clients for a certificate (`tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    Required,
    Optional,
}

/// A Redis listening on TLS only (`--port 0`), its certificate for `127.0.0.1` and `localhost`
/// signed by the test's CA; client certificates signed by the same CA required or optional.
pub struct TlsRedis {
    pub port: u16,
    pub proc: Proc,
}

impl TlsRedis {
    pub fn start(dir: &Path, ca: &TestCa, clients: ClientCertificates) -> Self {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("create the Redis folder");
        let server = ca
            .issue("redis-under-test", &["127.0.0.1", "localhost"])
            .write(&dir, "server");
        let ca_file = ca.write(&dir, "ca.crt");
        let port = free_port();
        let port_text = port.to_string();
        let dir_text = dir.to_string_lossy().into_owned();
        let auth = match clients {
            ClientCertificates::Required => "yes",
            ClientCertificates::Optional => "optional",
        };
        let proc = Proc::spawn(
            "redis-tls",
            Path::new("redis-server"),
            &[
                "--port",
                "0",
                "--tls-port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &server.cert.to_string_lossy(),
                "--tls-key-file",
                &server.key.to_string_lossy(),
                "--tls-ca-cert-file",
                &ca_file.to_string_lossy(),
                "--tls-auth-clients",
                auth,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir_text,
            ],
            Vec::new(),
            dir.join("redis.log"),
        );
        wait_for_port(port, "redis-server (TLS)", Duration::from_secs(10));
        Self { port, proc }
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}
