//! TLS and mutual TLS on the gRPC ports, with certificates made for the test by `openssl`: a
//! client with a certificate from the trusted CA is served; one without, or talking plain text,
//! is refused at the handshake and changes nothing.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use creditgate::clock::SystemClock;
use creditgate::config::TlsConfig;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(key);
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
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:billing.example\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let mut request = vec!["req"];
        request.extend(key);
        let (keyout, csr, crt, extfile, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
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
}

async fn connect(
    addr: std::net::SocketAddr,
    dir: &Path,
    with_client_certificate: bool,
) -> Result<Channel, tonic::transport::Error> {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .domain_name("127.0.0.1");
    if with_client_certificate {
        tls = tls.identity(Identity::from_pem(read("client.crt"), read("client.key")));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn only_clients_with_a_trusted_certificate_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    certificates(&certs);
    let mut config = common::config(dir.path());
    config.tls = Some(TlsConfig {
        cert: certs.join("server.crt"),
        key: certs.join("server.key"),
        client_ca: Some(certs.join("ca.crt")),
    });
    let server = creditgate::server::Server::start(config, Arc::new(SystemClock))
        .await
        .expect("server starts with TLS");

    // With a certificate from the CA: served, on both ports.
    let channel = connect(server.admin_addr(), &certs, true).await.unwrap();
    AdminClient::new(channel)
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "g1".into(),
            amount: "1.00".into(),
            ..Default::default()
        })
        .await
        .expect("a trusted client is served");
    let mut gate = GateClient::new(connect(server.gate_addr(), &certs, true).await.unwrap());
    assert_eq!(default_wallet(&mut gate, "acme").await.available, "1.00");

    // Without one: refused at the handshake, so nothing is charged.
    let refused = match connect(server.gate_addr(), &certs, false).await {
        Err(_) => true,
        Ok(channel) => GateClient::new(channel)
            .charge(charge_amount("acme", "chat", "1.00"))
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    // In plain text: refused too.
    let plain = match Endpoint::from_shared(format!("http://{}", server.gate_addr()))
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(channel) => GateClient::new(channel)
            .charge(charge_amount("acme", "chat", "1.00"))
            .await
            .is_err(),
    };
    assert!(plain, "a plain-text client is refused");
    assert_eq!(default_wallet(&mut gate, "acme").await.available, "1.00");

    // The command's client subcommands speak TLS too.
    let url = format!("https://{}", server.gate_addr());
    let balance = tokio::task::spawn_blocking({
        let certs = certs.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_creditgate"))
                .args(["balance", "--account", "acme", "--json", "--server", &url])
                .arg("--ca-cert")
                .arg(certs.join("ca.crt"))
                .arg("--client-cert")
                .arg(certs.join("client.crt"))
                .arg("--client-key")
                .arg(certs.join("client.key"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        balance.status.success(),
        "{}",
        String::from_utf8_lossy(&balance.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&balance.stdout).unwrap();
    assert_eq!(json["wallets"][0]["available"], "1.00");
    server.stop().await;
}

#[tokio::test]
async fn an_unreadable_certificate_stops_the_server_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.tls = Some(TlsConfig {
        cert: dir.path().join("missing.crt"),
        key: dir.path().join("missing.key"),
        client_ca: None,
    });
    let error = match creditgate::server::Server::start(config, Arc::new(SystemClock)).await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("started without its certificate"),
    };
    assert!(error.contains("tls.cert"), "{error}");
}
