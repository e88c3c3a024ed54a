//! The fault tests' rig: a logged-in avsd connected to the AVS stand-in
//! through a [`Proxy`], its property changes recorded, and the checks that
//! it came back whole after a fault.

use std::time::{Duration, Instant};

use avsctl::proxy::{AuthorizationProxy, DialogProxy};

use super::{Proxy, Recorder};
use crate::Daemon;
use crate::companion::WAIT;
use crate::system::{AvsSim, World, wait_connection};

/// The property avsd's link state is announced in.
pub const CONNECTION: &str = "Dialog.Connection";
/// The property avsd's authorization state is announced in.
pub const STATE: &str = "Authorization.State";

/// A logged-in avsd connected to the AVS stand-in through a proxy, pinging
/// every second (unless told otherwise), with its property changes
/// recorded from login on.
pub struct Rig {
    /// Keeps the companion, the LWA stand-in and the bus alive.
    pub world: World,
    /// The AVS stand-in behind the proxy.
    pub avs: AvsSim,
    /// The proxy avsd connects through.
    pub proxy: Proxy,
    /// The avsd under test.
    pub avsd: Daemon,
    /// Its Authorization interface.
    pub auth: AuthorizationProxy<'static>,
    /// Every Connection and State change avsd announced.
    pub rec: Recorder,
}

/// How to set the rig up; `Default` is the usual one.
pub struct RigOpts {
    /// The name avsd reaches the proxy by (the stand-in's certificate
    /// names 127.0.0.1 and localhost).
    pub host: &'static str,
    /// Run avsd through this (see [`Daemon::start_wrapped`]).
    pub wrapper: Vec<String>,
    /// Access tokens' lifetime at LWA, seconds.
    pub token_lifetime: u64,
    /// avsd's `renew_before_secs`.
    pub renew_before: u64,
    /// avsd's `ping_interval_secs`.
    pub ping_interval: u64,
}

impl Default for RigOpts {
    fn default() -> Self {
        RigOpts {
            host: "127.0.0.1",
            wrapper: Vec::new(),
            token_lifetime: 3600,
            renew_before: 600,
            ping_interval: 1,
        }
    }
}

/// The usual rig.
pub async fn rig() -> Rig {
    rig_with(RigOpts::default()).await
}

/// The rig set up as `opts` says.
pub async fn rig_with(opts: RigOpts) -> Rig {
    let world = World::new(opts.token_lifetime).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let proxy = Proxy::start(&avs.base).await;
    let endpoint = proxy.base().replace("127.0.0.1", opts.host);
    let config = world.avsd_config_with_avs(&avs, opts.renew_before).replace(
        &format!("endpoint = \"{}\"\n", avs.base),
        &format!(
            "endpoint = \"{endpoint}\"\nping_interval_secs = {}\n",
            opts.ping_interval
        ),
    );
    assert!(config.contains(&endpoint), "{config}");
    let (avsd, auth) = world.logged_in_wrapped(&config, &opts.wrapper).await;
    let conn = world.bus.connect().await;
    let rec = Recorder::start(&conn).await;
    let dialog = DialogProxy::new(&conn).await.unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    let stats = avs.wait("current=1&event=System.SynchronizeState").await;
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");
    assert_eq!(proxy.accepted(), 1);
    Rig {
        world,
        avs,
        proxy,
        avsd,
        auth,
        rec,
    }
}

impl Rig {
    /// After a fault started at `mark`: avsd said it lost the connection,
    /// then `connected` again; the stand-in has exactly one live
    /// connection, downchannel open and synchronized, the newest of all
    /// the proxy let through; and Authorization.State never changed.
    /// Returns when `connected` was announced.
    pub async fn assert_recovered(&self, mark: usize, fault: &str) -> Instant {
        self.assert_recovered_within(mark, fault, WAIT).await
    }

    /// `assert_recovered`, allowing `back_within` for the way back (a long
    /// outage leaves avsd sleeping a longer back-off delay).
    pub async fn assert_recovered_within(
        &self,
        mark: usize,
        fault: &str,
        back_within: Duration,
    ) -> Instant {
        let fail = |what: &str| -> ! {
            panic!(
                "{fault}: {what}; changes seen {:?}; avsd log:\n{}",
                self.rec.values(CONNECTION, mark),
                self.avsd.log_text()
            )
        };
        let Some((lost, _)) = self
            .rec
            .wait_after(mark, CONNECTION, |v| v != "connected", WAIT)
            .await
        else {
            fail("avsd never noticed")
        };
        let Some((_, back)) = self
            .rec
            .wait_after(lost, CONNECTION, |v| v == "connected", back_within)
            .await
        else {
            fail("avsd never connected again")
        };
        let total = self.proxy.upstream();
        let stats = self
            .avs
            .wait(&format!("current=1&connections={total}"))
            .await;
        let open = stats["open"].as_array().unwrap();
        assert_eq!(open.len(), 1, "{fault}: {stats:#}");
        assert_eq!(open[0]["downchannel"], true, "{fault}: {stats:#}");
        assert_eq!(open[0]["synced"], true, "{fault}: {stats:#}");
        assert_eq!(
            self.proxy.forwarding(),
            1,
            "{fault}: avsd holds more than one connection"
        );
        self.assert_stayed_authorized(fault).await;
        back
    }

    /// Fail, naming `fault`, if avsd ever left `authorized`.
    pub async fn assert_stayed_authorized(&self, fault: &str) {
        let states = self.rec.values(STATE, 0);
        assert!(
            states.iter().all(|s| s == "authorized"),
            "{fault}: Authorization.State left authorized: {states:?}; avsd log:\n{}",
            self.avsd.log_text()
        );
        assert_eq!(self.auth.state().await.unwrap(), "authorized");
        assert_eq!(self.auth.last_error().await.unwrap(), "");
    }
    /// Like `assert_recovered`, for a black hole: the stand-in keeps the
    /// dead connection until the network comes back (healed here once avsd
    /// is connected anew).
    pub async fn assert_recovered_after_black_hole(&self, mark: usize) -> Instant {
        self.assert_recovered_after_black_hole_within(mark, Duration::from_secs(45))
            .await
    }

    /// `assert_recovered_after_black_hole`, allowing `notice_within` for
    /// avsd to notice.
    pub async fn assert_recovered_after_black_hole_within(
        &self,
        mark: usize,
        notice_within: Duration,
    ) -> Instant {
        let fault = "black hole";
        let Some((lost, _)) = self
            .rec
            .wait_after(mark, CONNECTION, |v| v != "connected", notice_within)
            .await
        else {
            panic!(
                "{fault}: avsd never noticed; avsd log:\n{}",
                self.avsd.log_text()
            )
        };
        let Some((_, back)) = self
            .rec
            .wait_after(lost, CONNECTION, |v| v == "connected", WAIT)
            .await
        else {
            panic!(
                "{fault}: avsd never connected again; avsd log:\n{}",
                self.avsd.log_text()
            )
        };
        assert_eq!(self.proxy.forwarding(), 1, "{fault}");
        self.avs
            .wait(&format!("connections={}", self.proxy.upstream()))
            .await;
        self.proxy
            .wait_until("avsd closing the black-holed connection", WAIT, |p| {
                p.black_held_by_client() == 0
            })
            .await;
        self.proxy.heal_black_holes();
        let stats = self.avs.wait("current=1").await;
        let open = stats["open"].as_array().unwrap();
        assert_eq!(open.len(), 1, "{fault}: {stats:#}");
        assert_eq!(open[0]["synced"], true, "{fault}: {stats:#}");
        self.assert_stayed_authorized(fault).await;
        back
    }
}
