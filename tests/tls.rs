//! TLS and mutual TLS on the gRPC ports, with certificates made for the test by `openssl`: a
//! client with a certificate from the trusted CA is served; one without, or talking plain text,
//! is refused at the handshake and changes nothing.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::certs::{Client, certificates, connect};
use common::*;
use creditgate::clock::SystemClock;
use creditgate::config::TlsConfig;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use tonic::transport::Endpoint;

#[tokio::test]
async fn only_clients_with_a_trusted_certificate_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    certificates(&certs, &[("client", "DNS:billing.example")]);
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
    let channel = connect(server.admin_addr(), &certs, Client::Named("client"))
        .await
        .unwrap();
    AdminClient::new(channel)
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "g1".into(),
            amount: "1.00".into(),
            ..Default::default()
        })
        .await
        .expect("a trusted client is served");
    let mut gate = GateClient::new(
        connect(server.gate_addr(), &certs, Client::Named("client"))
            .await
            .unwrap(),
    );
    assert_eq!(default_wallet(&mut gate, "acme").await.available, "1.00");

    // Without one: refused at the handshake, so nothing is charged.
    let refused = match connect(server.gate_addr(), &certs, Client::Anonymous).await {
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
