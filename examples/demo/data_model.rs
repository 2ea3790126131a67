//! The demo's second road: the completed upgrade walked from `legacy` to `events_only` (the v4
//! worker played by the stand-in: rows M1-M5 and the propagation job), each stage timed from
//! the object as a person watching it would see it (polled every 100 ms).

use std::time::{Duration, Instant};

use langfuse_upgrade_operator::api::{DataModelStage, LangfuseUpgrade, Phase};
use lfu_testkit::e2e_support::v4_player::{V4Knobs, play_v4_worker};
use lfu_testkit::e2e_support::{TestNs, kubectl};
use lfu_testkit::support::{self, TestDb};

fn stage(u: &LangfuseUpgrade) -> Option<DataModelStage> {
    Some(u.status.as_ref()?.data_model.as_ref()?.stage)
}

fn said(u: &LangfuseUpgrade) -> String {
    u.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "DataModel"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

/// Walks `name` to `events_only` and prints each stage's time; `Err` with the last state.
pub async fn walk(
    ns: &TestNs,
    db: &TestDb,
    name: &str,
    worker: &str,
    stamp: &dyn Fn() -> String,
) -> Result<(), String> {
    support::load_v4_events(&db.ch_client).await;
    let player = play_v4_worker(ns, db, &support::env().redis_url, worker, V4Knobs::default());
    let patch = serde_json::json!({ "spec": {
        "target": { "dataModel": "Events" },
        "dataModel": { "dualWriteHealthyFor": "5s", "producerWindow": "5s", "acknowledge": ["Cutover"] }
    }});
    println!(
        "\n{} kubectl patch lfu {name}: target.dataModel Events (dualWriteHealthyFor 5s, producerWindow 5s, Cutover acknowledged)",
        stamp()
    );
    kubectl(
        &[
            "-n",
            &ns.name,
            "patch",
            "lfu",
            name,
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    let started = Instant::now();
    let mut at = started;
    let mut last_stage = None;
    let mut last_said = String::new();
    let deadline = started + Duration::from_secs(180);
    let outcome = loop {
        let u = ns.upgrade(name).await;
        let now_said = said(&u);
        if now_said != last_said {
            println!("{}   {}", stamp(), now_said.chars().take(160).collect::<String>());
            last_said = now_said;
        }
        let s = stage(&u);
        if s != last_stage {
            if let Some(previous) = last_stage {
                println!(
                    "{}   stage {previous:?} took {:.1}s",
                    stamp(),
                    at.elapsed().as_secs_f64()
                );
            }
            at = Instant::now();
            last_stage = s;
        }
        let phase = u.status.as_ref().and_then(|s| s.phase);
        if s == Some(DataModelStage::EventsOnly) && phase == Some(Phase::Completed) {
            break Ok(());
        }
        if matches!(phase, Some(Phase::Blocked | Phase::Failed)) || Instant::now() > deadline {
            break Err(format!("{phase:?}: {last_said}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    player.abort();
    if outcome.is_ok() {
        println!(
            "{} events_only {:.1}s after the patch (legacy -> dual -> backfill M1-M4 -> counts, producers -> cutover)",
            stamp(),
            started.elapsed().as_secs_f64()
        );
    }
    outcome
}
