//! The local half of leader election: this replica writes only while its last Lease renewal is
//! recent enough that no other replica can have taken the Lease. The Lease library reports a
//! loss only when the Lease API answers; while that API fails (a control-plane outage) it backs
//! off for up to 30 s and says nothing, and another replica may lead 15 s after the last
//! renewal. So the time of the last renewal is kept here, by the Lease client itself, and read
//! on the monotonic clock.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// The Lease's duration and grace: renewed `duration - grace` (5 s) after the last renewal, so
/// an apiserver restart of a few seconds that begins just before a renewal is due still leaves
/// the Lease library's retries (1 s, then doubling) a success before the fence runs out
/// (renewed every 10 s, one such restart stopped the leader: seen in the fault table on a busy
/// machine).
pub const LEASE_DURATION_SECS: u64 = 15;
pub const LEASE_GRACE_SECS: u64 = 10;

/// Longest wait for the apiserver's answer to a Lease request: under the Lease's grace.
pub const LEASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a renewal lets this replica act, from when it was sent: another replica can take
/// the Lease only after the full duration; the last second is left for clocks and for a write
/// already on the wire. A healthy leader has its next renewal answered long before (sent 5 s
/// later, answered within the 4 s request timeout).
pub const HOLDS_FOR: Duration = Duration::from_secs(LEASE_DURATION_SECS - 1);

/// Whether this replica may still write. Cheap to clone; every clone sees the same renewals.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    /// `None`: no leader election (a single replica by choice): nothing to fence against.
    renewed: Option<Arc<Mutex<Option<Instant>>>>,
}

impl Fence {
    /// No leader election: writes are never fenced.
    pub fn none() -> Self {
        Fence { renewed: None }
    }

    /// Leader election: nothing may be written until the first successful Lease write.
    pub fn leased() -> Self {
        Fence {
            renewed: Some(Arc::default()),
        }
    }

    /// A Lease write sent at `sent` succeeded (acquired or renewed).
    pub fn renewed(&self, sent: Instant) {
        if let Some(r) = &self.renewed {
            let mut last = r.lock().expect("fence lock");
            *last = Some(last.map_or(sent, |l| l.max(sent)));
        }
    }

    /// A renewal this process did not make (an earlier run under the same identity, which the
    /// Lease library takes as still holding): counted from the Lease's own `renewTime`, read
    /// on the wall clock and carried over to the monotonic one.
    pub fn renewed_at(&self, renew_time: jiff::Timestamp) {
        let ago = jiff::Timestamp::now().duration_since(renew_time);
        let ago = Duration::try_from(ago).unwrap_or_default();
        if let Some(sent) = Instant::now().checked_sub(ago) {
            self.renewed(sent);
        }
    }

    /// Until when this replica may write; `None` without leader election.
    pub fn deadline(&self) -> Option<Option<Instant>> {
        let r = self.renewed.as_ref()?;
        Some(r.lock().expect("fence lock").map(|sent| sent + HOLDS_FOR))
    }

    pub fn holds_at(&self, now: Instant) -> bool {
        match self.deadline() {
            None => true,
            Some(deadline) => deadline.is_some_and(|d| now < d),
        }
    }

    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// `Ok` while it holds; else the error that stops a write.
    pub fn check(&self) -> crate::error::Result<()> {
        match self.holds() {
            true => Ok(()),
            false => Err(crate::error::Error::Leader(
                "the Lease was not renewed in time; writing nothing more".into(),
            )),
        }
    }

    /// Resolves once the fence no longer holds (never without leader election).
    pub async fn expired(&self) {
        loop {
            match self.deadline() {
                None => std::future::pending::<()>().await,
                Some(None) => return,
                Some(Some(d)) if Instant::now() >= d => return,
                Some(Some(d)) => tokio::time::sleep_until(d.into()).await,
            }
        }
    }

    /// A client layer that records every successful Lease write (the Lease client makes no
    /// other writes) with the instant it was sent.
    pub fn layer(&self) -> Renewals {
        Renewals { fence: self.clone() }
    }
}

#[derive(Clone)]
pub struct Renewals {
    fence: Fence,
}

impl<S> tower::Layer<S> for Renewals {
    type Service = Renewing<S>;
    fn layer(&self, inner: S) -> Renewing<S> {
        Renewing {
            inner,
            fence: self.fence.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Renewing<S> {
    inner: S,
    fence: Fence,
}

impl<S, B, R> tower::Service<http::Request<B>> for Renewing<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let write = req.method() != http::Method::GET;
        let sent = Instant::now();
        let fence = self.fence.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            if write && answer.as_ref().is_ok_and(|r| r.status().is_success()) {
                fence.renewed(sent);
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[test]
    fn holds_only_within_the_renewal_budget() {
        let f = Fence::leased();
        let t0 = Instant::now();
        assert!(!f.holds_at(t0), "never renewed: not leading");
        f.renewed(t0);
        assert!(f.holds_at(t0 + Duration::from_secs(13)));
        assert!(!f.holds_at(t0 + HOLDS_FOR), "past the budget");
        // An older renewal answered late never moves the deadline back.
        f.renewed(t0 + Duration::from_secs(10));
        f.renewed(t0 + Duration::from_secs(5));
        assert!(f.holds_at(t0 + Duration::from_secs(23)));
        assert!(!f.holds_at(t0 + Duration::from_secs(24)));
        assert!(Fence::none().holds(), "no leader election: never fenced");
    }

    #[test]
    fn a_renewal_of_an_earlier_run_counts_from_its_renew_time() {
        let f = Fence::leased();
        f.renewed_at(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(12));
        assert!(f.holds(), "12 s ago: 2 s left");
        let g = Fence::leased();
        g.renewed_at(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(20));
        assert!(!g.holds(), "20 s ago: another replica may lead");
    }

    /// The budget ends before another replica can lead (the Lease's duration after the last
    /// renewal) and after a healthy leader's next renewal has answered, with room for the
    /// Lease library's retries after a failed one (1 s, then 2 s later).
    #[test]
    fn the_budget_lies_between_a_healthy_renewal_and_a_takeover() {
        let renewal_due = Duration::from_secs(LEASE_DURATION_SECS - LEASE_GRACE_SECS);
        assert!(HOLDS_FOR >= renewal_due + LEASE_REQUEST_TIMEOUT);
        assert!(HOLDS_FOR > renewal_due + Duration::from_secs(1 + 2) + LEASE_REQUEST_TIMEOUT);
        assert!(HOLDS_FOR < Duration::from_secs(LEASE_DURATION_SECS));
    }

    #[tokio::test]
    async fn only_successful_writes_renew() {
        let answer = |status: u16| {
            tower::service_fn(move |_req: http::Request<()>| async move {
                Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).unwrap())
            })
        };
        let request = |method: http::Method| http::Request::builder().method(method).body(()).unwrap();
        let f = Fence::leased();
        let mut get = f.layer().layer(answer(200));
        get.ready()
            .await
            .unwrap()
            .call(request(http::Method::GET))
            .await
            .unwrap();
        assert!(!f.holds(), "a read is not a renewal");
        let mut refused = f.layer().layer(answer(409));
        refused
            .ready()
            .await
            .unwrap()
            .call(request(http::Method::PUT))
            .await
            .unwrap();
        assert!(!f.holds(), "a refused write is not a renewal");
        let mut ok = f.layer().layer(answer(200));
        ok.ready()
            .await
            .unwrap()
            .call(request(http::Method::PATCH))
            .await
            .unwrap();
        assert!(f.holds());
    }
}
