//! Unit tests of the codec: grants and splits read back as they were encoded.

use super::*;

#[test]
fn grants_round_trip_through_their_encoding() {
    let grant = Grant {
        terms: GrantTerms {
            id: GrantId::parse("g:1").unwrap(),
            wallet: WalletId::parse("cloud").unwrap(),
            kind: GrantKind::Promotional,
            priority: 20,
            amount_minor: 9_007_199_254_740_991,
            expires_at_ms: Some(1_800_000_000_000),
            features: vec![
                FeatureId::parse("agent.minutes").unwrap(),
                FeatureId::parse("cloud.inference").unwrap(),
            ],
            recurrence: None,
        },
        remaining_minor: 5,
        held_minor: 2,
        created_at_ms: 1_700_000_000_000,
        voided_at_ms: None,
        period_index: 0,
        period_granted_minor: None,
    };
    let text = encode_grant(&grant);
    assert_eq!(
        text,
        "promotional|20|9007199254740991|5|2|1800000000000|1700000000000|||0|agent.minutes,cloud.inference"
    );
    assert_eq!(decode_grant("g:1", "cloud", &text).unwrap(), grant);
    let before_recurrence = "promotional|20|9007199254740991|5|2|1800000000000|1700000000000||agent.minutes,cloud.inference";
    assert_eq!(
        decode_grant("g:1", "cloud", before_recurrence).unwrap(),
        grant
    );

    let mut plan = grant.clone();
    plan.terms.kind = GrantKind::Included;
    plan.terms.recurrence = Some(Recurrence {
        period: Period::Month,
        anchor_ms: None,
        rollover_max_minor: 250,
    });
    plan.period_index = 3;
    plan.period_granted_minor = Some(1_250);
    let text = encode_grant(&plan);
    assert!(text.contains("|month,,250|3,1250|"), "{text}");
    assert_eq!(decode_grant("g:1", "cloud", &text).unwrap(), plan);
}

#[test]
fn splits_round_trip() {
    let split = vec![
        Portion {
            grant: GrantId::parse("a@b").unwrap(),
            amount_minor: 1,
        },
        Portion {
            grant: GrantId::parse("c").unwrap(),
            amount_minor: 9_007_199_254_740_991,
        },
    ];
    assert_eq!(decode_split(&encode_split(&split)).unwrap(), split);
    assert!(decode_split("").unwrap().is_empty());
    assert!(decode_split("a").is_err());
}
