//! Unit tests of the settings: the file, flags over it, every table's checks, and the
//! README's examples.

use super::*;

#[test]
fn a_full_file_parses_into_prices_and_limits() {
    let text = r#"
        listen = "127.0.0.1:6000"
        [limits]
        hold_ttl_ms_default = 30000
        [[prices]]
        feature = "chat.completions"
        per_million_tokens = { "gpt-x" = { input = "3.00", output = "15.00" } }
        [[prices]]
        feature = "agent.minutes"
        wallet = "cloud"
        per_unit = { unit = "minute", price = "0.05" }
        [[prices]]
        feature = "image.generate"
        per_call = "0.04"
    "#;
    let file: FileConfig = toml::from_str(text).unwrap();
    let config = ServerConfig::resolve(Flags::default(), file).unwrap();
    assert_eq!(config.listen.port(), 6000);
    assert_eq!(config.admin_listen.to_string(), ADMIN_LISTEN_DEFAULT);
    assert_eq!(config.limits.hold_ttl_ms_default, 30_000);
    assert_eq!(config.limits.hold_ttl_ms_max, 86_400_000);
    assert_eq!(config.prices.len(), 3);
    assert_eq!(config.prices[1].wallet.as_str(), "cloud");
    assert_eq!(config.prices[2].rule.describe(), "0.04 per call");
}

#[test]
fn flags_win_over_the_file() {
    let file: FileConfig = toml::from_str(r#"listen = "127.0.0.1:6000""#).unwrap();
    let flags = Flags {
        listen: Some("127.0.0.1:7000".parse().unwrap()),
        ..Flags::default()
    };
    let config = ServerConfig::resolve(flags, file).unwrap();
    assert_eq!(config.listen.port(), 7000);
}

#[test]
fn metrics_are_served_on_loopback_unless_turned_off() {
    let resolve = |text: &str| {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        ServerConfig::resolve(Flags::default(), file).map_err(|e| e.to_string())
    };
    assert_eq!(
        resolve("").unwrap().metrics_listen,
        Some(METRICS_LISTEN_DEFAULT.parse().unwrap())
    );
    assert_eq!(
        resolve("metrics_listen = \"off\"").unwrap().metrics_listen,
        None
    );
    assert_eq!(
        resolve("metrics_listen = \"0.0.0.0:9000\"")
            .unwrap()
            .metrics_listen
            .map(|a| a.port()),
        Some(9000)
    );
    let error = resolve("metrics_listen = \"9000\"").unwrap_err();
    assert!(error.contains("neither an address"), "{error}");
    let flags = Flags {
        metrics_listen: Some("off".parse().unwrap()),
        ..Flags::default()
    };
    let file: FileConfig = toml::from_str("metrics_listen = \"0.0.0.0:9000\"").unwrap();
    assert_eq!(
        ServerConfig::resolve(flags, file).unwrap().metrics_listen,
        None
    );
}

#[test]
fn otlp_settings_are_checked() {
    let resolve = |text: &str| {
        let file: FileConfig = toml::from_str(text).unwrap();
        ServerConfig::resolve(Flags::default(), file).map_err(|e| e.to_string())
    };
    let config = resolve("otlp_endpoint = \"http://collector:4317\"").unwrap();
    assert_eq!(config.otlp_sample_ratio, 1.0);
    for (text, complaint) in [
        ("otlp_endpoint = \"collector:4317\"", "otlp_endpoint"),
        ("otlp_sample_ratio = 1.5", "otlp_sample_ratio"),
        ("otlp_sample_ratio = -0.1", "otlp_sample_ratio"),
    ] {
        let error = resolve(text).unwrap_err();
        assert!(error.contains(complaint), "{text}: {error}");
    }
}

#[test]
fn unknown_fields_and_bad_prices_are_refused() {
    assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    assert!(
        toml::from_str::<FileConfig>("[[prices]]\nfeature = \"f\"\nper_call = \"1e3\"").is_err()
    );
    let both: FileConfig = toml::from_str(
        "[[prices]]\nfeature = \"f\"\nper_call = \"1\"\nper_unit = { unit = \"m\", price = \"1\" }",
    )
    .unwrap();
    assert!(both.prices[0].rule().is_err());
}

/// The first TOML example of the README's section `heading`, resolved.
fn readme_example(heading: &str) -> ServerConfig {
    let readme = include_str!("../../README.md");
    let section = readme
        .find(&format!("\n## {heading}\n"))
        .expect("the README has the section");
    let start = section
        + readme[section..]
            .find("```toml\n")
            .expect("the section has a TOML example")
        + 8;
    let end = start + readme[start..].find("```").expect("the example ends");
    let file: FileConfig = toml::from_str(&readme[start..end]).unwrap();
    ServerConfig::resolve(Flags::default(), file).unwrap()
}

#[test]
fn the_readme_callers_example_is_a_valid_config() {
    let config = readme_example("Callers: who may move a balance");
    assert!(config.policy.is_on());
}

#[test]
fn the_readme_example_is_a_valid_config() {
    let config = readme_example("Configuration");
    assert_eq!(
        config.limits,
        LimitsConfig::default(),
        "the example shows the defaults"
    );
    assert_eq!(config.prices.len(), 3);
}

#[test]
fn the_ext_authz_table_is_checked() {
    let resolve = |text: &str| {
        let file: FileConfig = toml::from_str(&format!("[ext_authz]\n{text}")).unwrap();
        ServerConfig::resolve(Flags::default(), file)
    };
    let config = resolve("account_metadata = \"jwt/payload/org\"").unwrap();
    assert_eq!(
        config.ext_authz.account_metadata,
        Some(("jwt".into(), vec!["payload".into(), "org".into()]))
    );
    assert_eq!(config.ext_authz.feature_header, "x-creditgate-feature");
    for (text, complaint) in [
        ("account_metadata = \"jwt\"", "account_metadata"),
        ("account_metadata = \"jwt//org\"", "account_metadata"),
        ("feature_header = \"X-Feature\"", "feature_header"),
    ] {
        let error = resolve(text).unwrap_err().to_string();
        assert!(error.contains(complaint), "{text}: {error}");
    }
    assert!(toml::from_str::<FileConfig>("[ext_authz]\naccount = \"x\"").is_err());
}

#[test]
fn webhooks_are_checked() {
    let webhook = |fields: &str| -> Result<ServerConfig, ConfigError> {
        let file: FileConfig = toml::from_str(&format!("[[webhooks]]\n{fields}")).unwrap();
        ServerConfig::resolve(Flags::default(), file)
    };
    let good = "name = \"b\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"0123456789abcdef\"";
    let config = webhook(good).unwrap();
    assert_eq!(config.webhooks[0].name, "b");
    assert!(config.webhooks[0].kinds.is_empty(), "every kind by default");
    for (fields, complaint) in [
        (good.replace("http:", "https:"), "https"),
        (good.replace("0123456789abcdef", "short"), "secret"),
        (good.replace("\"b\"", "\"a b\""), "name"),
        (
            format!("{good}\nevents = [\"lowbalance\"]"),
            "unknown event",
        ),
        (good.replace("http://127.0.0.1:9/x", "127.0.0.1"), "url"),
    ] {
        let error = webhook(&fields).unwrap_err().to_string();
        assert!(error.contains(complaint), "{fields}: {error}");
        assert!(error.contains("webhooks[0]"), "{error}");
    }
    let twice: FileConfig =
        toml::from_str(&format!("[[webhooks]]\n{good}\n[[webhooks]]\n{good}")).unwrap();
    let error = ServerConfig::resolve(Flags::default(), twice).unwrap_err();
    assert!(error.to_string().contains("used twice"), "{error}");
}

#[test]
fn callers_are_checked() {
    let hash = "a".repeat(64);
    let mtls = "[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\n";
    let resolve = |text: &str| {
        let file: FileConfig = toml::from_str(text).unwrap();
        ServerConfig::resolve(Flags::default(), file)
    };
    let caller = |fields: &str| format!("[[callers]]\nname = \"gw\"\n{fields}\n");
    let good = caller(&format!(
        "token_sha256 = \"{hash}\"\naccounts = [\"acme:*\"]"
    ));
    let config = resolve(&good).unwrap();
    assert!(config.policy.is_on());
    assert!(!resolve("").unwrap().policy.is_on(), "off without callers");
    let by_san = caller("san = \"gw.example\"\naccounts = [\"*\"]\noperations = [\"admin\"]");
    resolve(&format!("{mtls}{by_san}")).unwrap();
    for (text, complaint) in [
        (by_san.clone(), "client_ca"),
        (
            caller("accounts = [\"*\"]"),
            "exactly one of san and token_sha256",
        ),
        (
            caller(&format!(
                "san = \"x\"\ntoken_sha256 = \"{hash}\"\naccounts = [\"*\"]"
            )),
            "exactly one",
        ),
        (
            caller("token_sha256 = \"abc\"\naccounts = [\"*\"]"),
            "64 hex digits",
        ),
        (
            caller(&format!("token_sha256 = \"{hash}\"\naccounts = []")),
            "accounts",
        ),
        (
            caller(&format!("token_sha256 = \"{hash}\"\naccounts = [\"a/b\"]")),
            "accounts",
        ),
        (
            format!("{good}operations = [\"refund\"]"),
            "\"refund\" is not an operation",
        ),
        (good.replace("\"gw\"", "\"g w\""), "name"),
        (format!("{good}{good}"), "used twice"),
        (
            format!("{good}{}", good.replace("\"gw\"", "\"gw2\"")),
            "same identity",
        ),
    ] {
        let error = resolve(&text).unwrap_err().to_string();
        assert!(error.contains(complaint), "{text}: {error}");
        assert!(error.contains("callers["), "{error}");
    }
    assert!(toml::from_str::<FileConfig>(&format!("{good}tokens = 1")).is_err());
}

#[test]
fn limits_are_checked() {
    let file: FileConfig = toml::from_str("[limits]\nhold_ttl_ms_default = 10").unwrap();
    assert!(ServerConfig::resolve(Flags::default(), file).is_err());
}
