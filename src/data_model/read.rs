//! The ClickHouse reads of the data-model road: the staging table's partitions, producers in
//! `events_core`, the cutover's counts. Read-only; a failure is the road's to report, not the
//! whole observation's.

use clickhouse::Client;
use jiff::Timestamp;

use super::counts::MonthCounts;
use super::producers::ProducerRow;
use super::sql::{COUNTS_SQL, PRODUCERS_SQL, STAGING_SQL};
use super::{EventsFacts, EventsQuery, StagingPartition};

#[derive(clickhouse::Row, serde::Deserialize)]
struct PartitionRow {
    name: String,
    start: i64,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct ProducerSeries {
    project: String,
    source: String,
    sdk_name: String,
    sdk_version: String,
    public_key: String,
    events: u64,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct CountRow {
    project: String,
    month: u32,
    traces: u64,
    root_spans: u64,
    observations: u64,
    child_spans: u64,
}

fn failed(what: &'static str) -> impl Fn(clickhouse::error::Error) -> String {
    move |e| format!("{what}: {}", e.to_string().trim())
}

pub async fn read(client: &Client, q: &EventsQuery) -> Result<EventsFacts, String> {
    let staging = async {
        if !q.staging {
            return Ok(Vec::new());
        }
        let rows: Vec<PartitionRow> = client
            .query(STAGING_SQL)
            .fetch_all()
            .await
            .map_err(failed("listing the staging table's partitions"))?;
        Ok::<_, String>(
            rows.into_iter()
                .filter_map(|r| {
                    Some(StagingPartition {
                        start: Timestamp::from_second(r.start).ok()?,
                        name: r.name,
                    })
                })
                .collect(),
        )
    };
    let producers = async {
        let Some(since) = q.producers_since else {
            return Ok(None);
        };
        let rows: Vec<ProducerSeries> = client
            .query(PRODUCERS_SQL)
            .bind(since.as_millisecond())
            .fetch_all()
            .await
            .map_err(failed("reading the producers in events_core"))?;
        Ok::<_, String>(Some(
            rows.into_iter()
                .map(|r| ProducerRow {
                    project: r.project,
                    source: r.source,
                    sdk_name: r.sdk_name,
                    sdk_version: r.sdk_version,
                    public_key: r.public_key,
                    events: r.events,
                })
                .collect(),
        ))
    };
    let (staging_partitions, producers) = tokio::try_join!(staging, producers)?;
    // The counts are the heavy read: alone, after the others answered.
    let counts = match q.counts {
        Some(w) => {
            let from = w.from.map_or(0, |t| t.as_millisecond());
            let until = w.until.as_millisecond();
            let rows: Vec<CountRow> = client
                .query(COUNTS_SQL)
                .bind(from)
                .bind(until)
                .bind(from)
                .bind(until)
                .bind(from)
                .bind(until)
                .bind(from)
                .bind(until)
                .fetch_all()
                .await
                .map_err(failed("counting the old and the events tables per project and month"))?;
            Some(
                rows.into_iter()
                    .map(|r| MonthCounts {
                        project: r.project,
                        month: r.month,
                        traces: r.traces,
                        root_spans: r.root_spans,
                        observations: r.observations,
                        child_spans: r.child_spans,
                    })
                    .collect(),
            )
        }
        None => None,
    };
    Ok(EventsFacts {
        staging_partitions,
        producers,
        counts,
    })
}
