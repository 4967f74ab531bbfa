//! Certificates for TLS tests, made by the `openssl` command: a CA, a server certificate for
//! 127.0.0.1, and client certificates with the subject alternative names a test asks for.

use std::path::Path;
use std::process::Command;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn openssl(dir: &Path, args: &[&str]) {
    let done = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        done.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

const KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// `<name>.crt` and `<name>.key` in `dir`, signed by the CA there, with `ext` as extensions.
fn issue(dir: &Path, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let (keyout, csr, crt, extfile, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
        format!("/CN={name}"),
    );
    let mut request = vec!["req"];
    request.extend(KEY);
    request.extend(["-keyout", &keyout, "-out", &csr, "-subj", &subj]);
    openssl(dir, &request);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "1",
            "-extfile",
            &extfile,
        ],
    );
}

/// `ca.crt`, `server.crt` (for 127.0.0.1) and, for each `(name, san)`, `<name>.crt` with
/// that subject alternative name (`DNS:…`, `URI:…`), each with its `.key`, in `dir`.
pub fn certificates(dir: &Path, clients: &[(&str, &str)]) {
    let mut ca = vec!["req", "-x509"];
    ca.extend(KEY);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    ]);
    openssl(dir, &ca);
    issue(
        dir,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    for (name, san) in clients {
        issue(
            dir,
            name,
            &format!("subjectAltName={san}\nextendedKeyUsage=clientAuth\n"),
        );
    }
}

/// Which client certificate a connection presents.
#[derive(Clone, Copy, Debug)]
pub enum Client<'a> {
    Anonymous,
    Named(&'a str),
}

/// A TLS connection to `addr`, trusting the CA in `dir`.
pub async fn connect(
    addr: std::net::SocketAddr,
    dir: &Path,
    client: Client<'_>,
) -> Result<Channel, tonic::transport::Error> {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .domain_name("127.0.0.1");
    if let Client::Named(name) = client {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{name}.crt")),
            read(&format!("{name}.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}
