//! Invariant 11 and the irreversible steps: nothing goes out before the fact it depends on.

use super::*;

/// Removes one recorded fact.
type ClearFact = fn(&mut LangfuseUpgradeStatus);

/// Facts recorded up to verification, v2 still at 2 replicas.
pub(super) fn verified_status() -> LangfuseUpgradeStatus {
    LangfuseUpgradeStatus {
        provisioning_started_at: Some(time(0)),
        source_replicas: Some(2),
        traffic_shifted_at: Some(time(10)),
        cutoff: Some(time(20)),
        migrations_enabled_at: Some(time(20)),
        migrations_finished_at: Some(time(30)),
        verified_at: Some(time(40)),
        ..Default::default()
    }
}

fn planner_for<'a>(u: &'a LangfuseUpgrade, obs: &'a Observed) -> (Planner<'a>, crate::controller::validate::Settings) {
    (
        Planner::new(u, obs, crate::testing::catalog(), t(100)),
        crate::controller::validate::validate(u).unwrap(),
    )
}

/// Each irreversible step checks its own preconditions: called before the facts it depends on,
/// it holds with OutOfOrder and writes nothing, whatever the order of the gates.
#[test]
fn retiring_v2_refuses_without_the_shift_the_migrations_or_the_verification() {
    let mut s = spec();
    s.strategy.retire_source_after = "0s".into();
    let clears: [(&str, ClearFact); 3] = [
        ("the traffic shift", |s| s.traffic_shifted_at = None),
        ("the end of the background migrations", |s| {
            s.migrations_finished_at = None
        }),
        ("verification", |s| s.verified_at = None),
    ];
    let obs = untouched();
    for (missing, clear) in clears {
        let mut status = verified_status();
        clear(&mut status);
        let u = upgrade(s.clone(), status);
        let (mut p, settings) = planner_for(&u, &obs);
        let hold = retire::retire(&mut p, &settings).unwrap_err();
        assert_eq!(hold.reason, reason::OUT_OF_ORDER, "{missing}");
        assert!(hold.message.contains(missing), "{missing}: {}", hold.message);
        assert!(p.actions.is_empty(), "{missing}: {:?}", p.actions);
        assert!(p.status.source_retired_at.is_none());
    }
    // With every fact recorded the same call retires v2.
    let u = upgrade(s, verified_status());
    let (mut p, settings) = planner_for(&u, &obs);
    assert!(retire::retire(&mut p, &settings).is_err());
    assert_eq!(p.actions, [Action::ScaleSource(0)]);
}

/// v2 gone at the verification's own second, `retireSourceAfter: 0s`: the retirement is recorded
/// no earlier than the verification (to the millisecond), so the history keeps their order.
#[test]
fn v2_is_never_recorded_retired_before_it_was_verified() {
    let mut s = spec();
    s.strategy.retire_source_after = "0s".into();
    let mut status = verified_status();
    status.verified_at = Some(Time(Timestamp::from_millisecond(t(40).as_millisecond() + 640).unwrap()));
    let u = upgrade(s, status);
    let mut obs = untouched();
    obs.source = None;
    let settings = crate::controller::validate::validate(&u).unwrap();
    let mut p = Planner::new(&u, &obs, crate::testing::catalog(), t(40));
    assert!(retire::retire(&mut p, &settings).is_ok());
    let retired = p.status.source_retired_at.clone().unwrap();
    assert_eq!(retired, time(41), "rounded up to the whole second after verifiedAt");
    let mut p = Planner::new(&u, &obs, crate::testing::catalog(), t(45));
    assert!(retire::retire(&mut p, &settings).is_ok());
    assert_eq!(p.status.source_retired_at, Some(time(45)));
}

#[test]
#[should_panic(expected = "two different applies of Deployment")]
fn a_second_different_apply_of_one_deployment_is_caught() {
    let u = upgrade(spec(), Default::default());
    let obs = untouched();
    let mut p = Planner::new(&u, &obs, crate::testing::catalog(), t(40));
    let mut d = k8s_openapi::api::apps::v1::Deployment::default();
    d.metadata.name = Some("prod-langfuse-web".into());
    p.act(Action::ApplyDeployment(Box::new(d.clone())));
    p.act(Action::ApplyDeployment(Box::new(d.clone())));
    d.metadata.labels = Some([("changed".to_string(), "yes".to_string())].into());
    p.act(Action::ApplyDeployment(Box::new(d)));
}

/// The switch states its own preconditions: called without one, it holds with OutOfOrder and
/// the Service's selector is not written.
#[test]
fn the_service_is_not_switched_before_preflight_a_serving_v3_and_the_promotion() {
    let ready = workloads::Readiness {
        web: true,
        worker: true,
        web_serving: true,
    };
    let preflighted = LangfuseUpgradeStatus {
        provisioning_started_at: Some(time(0)),
        ..Default::default()
    };
    let manual = {
        let mut s = spec();
        s.strategy.promotion = Promotion::Manual;
        s
    };
    let cases: [(&str, LangfuseUpgradeSpec, LangfuseUpgradeStatus, workloads::Readiness); 4] = [
        ("preflight", spec(), LangfuseUpgradeStatus::default(), ready),
        (
            "v3 web Available",
            spec(),
            preflighted.clone(),
            workloads::Readiness { web: false, ..ready },
        ),
        (
            "v3 worker Available",
            spec(),
            preflighted.clone(),
            workloads::Readiness { worker: false, ..ready },
        ),
        ("the promotion", manual, preflighted.clone(), ready),
    ];
    let obs = untouched();
    for (missing, s, status, ready) in cases {
        let u = upgrade(s, status);
        let (mut p, _) = planner_for(&u, &obs);
        let hold = shift::gate(&mut p, &ready).unwrap_err();
        assert_eq!(hold.reason, reason::OUT_OF_ORDER, "{missing}");
        assert!(hold.message.contains(missing), "{missing}: {}", hold.message);
        assert!(p.actions.is_empty(), "{missing}: {:?}", p.actions);
    }
    // With every precondition the same call writes the selector.
    let u = upgrade(spec(), preflighted);
    let (mut p, _) = planner_for(&u, &obs);
    assert!(
        shift::gate(&mut p, &ready).is_err(),
        "waits for the endpoints after the write"
    );
    assert!(
        p.actions.iter().any(|a| matches!(a, Action::ApplySelector { .. })),
        "{:?}",
        p.actions
    );
}

#[test]
fn the_migrations_are_not_turned_on_before_the_shift_and_the_cutoff() {
    let clears: [(&str, ClearFact); 2] = [
        ("the traffic shift", |s| s.traffic_shifted_at = None),
        ("the drain's cut-off", |s| s.cutoff = None),
    ];
    let obs = untouched();
    for (missing, clear) in clears {
        let mut status = verified_status();
        status.migrations_enabled_at = None;
        status.migrations_finished_at = None;
        status.verified_at = None;
        clear(&mut status);
        let u = upgrade(spec(), status);
        let (mut p, settings) = planner_for(&u, &obs);
        let hold = migrate::migrate(&mut p, &settings, &workloads::Readiness::default()).unwrap_err();
        assert_eq!(hold.reason, reason::OUT_OF_ORDER, "{missing}");
        assert!(hold.message.contains(missing), "{missing}: {}", hold.message);
        assert!(p.actions.is_empty(), "{missing}: {:?}", p.actions);
        assert!(p.status.migrations_enabled_at.is_none());
    }
}

#[test]
fn v3_is_released_only_after_verification_retirement_and_the_final_version() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut status = verified_status();
    status.source_retired_at = Some(time(50));
    let obs = untouched();
    // Retired, but the final version not reached: no release.
    let u = upgrade(s.clone(), status.clone());
    let (mut p, _) = planner_for(&u, &obs);
    let hold = retire::complete(&mut p);
    assert_eq!(hold.reason, reason::OUT_OF_ORDER);
    assert!(hold.message.contains("the final version"), "{}", hold.message);
    assert!(p.actions.is_empty() && p.status.completed_at.is_none());
    // Not retired: no release either, and no Finalizing stage to move v3 on from.
    status.source_retired_at = None;
    let u = upgrade(s, status);
    let (mut p, settings) = planner_for(&u, &obs);
    let hold = retire::complete(&mut p);
    assert!(hold.message.contains("v2's retirement"), "{}", hold.message);
    assert!(in_place::walk(&mut p, &settings, in_place::Walker::Owned).is_ok());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}
