//! The entry point's virtual IP: two (or more) HAProxy instances behind keepalived, one of them
//! holding the address. Each instance serves a small "whoami" page naming itself and its VRRP
//! state; read through the virtual IP it names the holder, read at an instance's own address it
//! tells that instance's state, so a split brain (two masters) shows as two pages saying
//! `master`. How the page fails through the virtual IP tells more: a connection that cannot be
//! made means nobody holds the address, a refused or unanswered one that its holder's HAProxy is
//! down or frozen.

use std::collections::BTreeMap;

use super::source::{Reading, TargetHealth};
use super::text::bounded;

/// The `target` label of the whoami page read through the virtual IP (so no HAProxy instance
/// may take this name).
pub const VIP_TARGET: &str = "vip";

label_enum! {
    /// keepalived's state of one instance, as its whoami page tells it: the `state` label.
    pub enum VrrpState {
        Master = "master",
        Backup = "backup",
        /// Its tracked check (HAProxy's health) fails: it will not take the address.
        Fault = "fault",
        /// keepalived stopped, or does not run next to this HAProxy (`none`).
        Stopped = "stopped",
        /// Anything else the page said.
        Other = "other",
        /// The page did not answer.
        Unknown = "unknown",
    }
}

impl VrrpState {
    /// From the page's second word (keepalived's notify state, any case).
    pub fn parse(word: &str) -> VrrpState {
        match word.to_ascii_lowercase().as_str() {
            "master" => VrrpState::Master,
            "backup" => VrrpState::Backup,
            "fault" => VrrpState::Fault,
            "stop" | "stopped" | "none" | "deleted" => VrrpState::Stopped,
            _ => VrrpState::Other,
        }
    }
}

/// What a whoami page says: the instance's name (as the `haproxy[].name` it is configured
/// under) and its VRRP state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whoami {
    pub name: String,
    pub state: VrrpState,
}

impl Whoami {
    /// From the page's body, `NAME STATE` on one line (a name of letters, digits and `-_.:`).
    pub fn parse(body: &str) -> Option<Whoami> {
        let mut words = body.split_whitespace();
        let (name, state) = (words.next()?, words.next()?);
        let name_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        let state_ok = state.chars().all(|c| c.is_ascii_alphabetic());
        (words.next().is_none() && name_ok && state_ok)
            .then(|| Whoami { name: bounded(name), state: VrrpState::parse(state) })
    }
}

label_enum! {
    /// How a whoami page failed to answer: the `answer` label, with `held` for an answer.
    pub enum Answer {
        /// It answered: the address is held by the instance it names.
        Held = "held",
        /// No connection within the deadline (or no route): nobody holds the address.
        Unreachable = "unreachable",
        /// Refused: the address is held, but no HAProxy listens there.
        Refused = "refused",
        /// Connected, but no answer within the deadline: the holder's HAProxy is frozen.
        NoAnswer = "no_answer",
        /// Something answered, but not a whoami page.
        BadAnswer = "bad_answer",
    }
}

/// One round of reads: the page through the virtual IP (with how it failed) and each
/// instance's own.
#[derive(Debug)]
pub struct VipRound {
    pub through_vip: Reading<Whoami>,
    /// How the page through the virtual IP failed; `None` when it answered.
    pub failure: Option<Answer>,
    pub instances: Vec<(String, Reading<Whoami>)>,
}

/// An instance's own whoami page.
#[derive(Debug, Clone, Default)]
pub struct InstancePage {
    pub health: TargetHealth,
    /// What it said last; `None` while it does not answer.
    pub whoami: Option<Whoami>,
}

impl InstancePage {
    pub fn state(&self) -> VrrpState {
        self.whoami.as_ref().map_or(VrrpState::Unknown, |w| w.state)
    }
}

/// The virtual IP as the exporter sees it.
#[derive(Debug, Clone, Default)]
pub struct VipView {
    /// The whoami page through the virtual IP.
    pub through_vip: TargetHealth,
    /// Its last answer: the holder, or how it failed. `None` before the first call.
    pub answer: Option<Result<Whoami, Answer>>,
    /// Each instance's own page, by the instance's name.
    pub instances: BTreeMap<String, InstancePage>,
    /// The last instance that answered through the virtual IP.
    pub last_holder: Option<String>,
    /// Moves of the address from one holder to another, since the exporter started.
    pub moves: u64,
}

impl VipView {
    pub fn new(instances: impl IntoIterator<Item = String>) -> Self {
        let instances = instances.into_iter().map(|n| (n, InstancePage::default())).collect();
        Self { instances, ..Self::default() }
    }

    /// The instance the page through the virtual IP named last.
    pub fn holder(&self) -> Option<&str> {
        self.answer.as_ref()?.as_ref().ok().map(|w| w.name.as_str())
    }

    /// How the page through the virtual IP answered last.
    pub fn answer_kind(&self) -> Option<Answer> {
        self.answer.as_ref().map(|a| a.as_ref().map_or_else(|kind| *kind, |_| Answer::Held))
    }

    /// The instances whose own page says `master`: more than one is a VRRP split brain.
    pub fn masters(&self) -> usize {
        self.instances.values().filter(|p| p.state() == VrrpState::Master).count()
    }

    /// Instances ready to take the address over: their own page says `backup`, they are not the
    /// holder, and `routes` says their HAProxy routes to the primary.
    pub fn standbys(&self, routes: impl Fn(&str) -> bool) -> usize {
        let holder = self.holder();
        let ready = |(name, page): &(&String, &InstancePage)| {
            page.state() == VrrpState::Backup && Some(name.as_str()) != holder && routes(name)
        };
        self.instances.iter().filter(ready).count()
    }
}

/// One round of whoami pages: `through` names the holder (`Err`: how the page through the
/// virtual IP failed); `pages` gives each instance's own state (`None`: its page refused).
#[cfg(test)]
pub fn test_round(through: Result<&str, Answer>, pages: &[(&str, Option<VrrpState>)]) -> VipRound {
    use super::source::{ErrorKind, TargetError};
    let at = std::time::Instant::now();
    let reading = |result| Reading { at, duration: std::time::Duration::from_millis(1), result };
    let page = |name: &str, state: Option<VrrpState>| {
        let refused = || TargetError::new(ErrorKind::Connect, "refused");
        reading(state.map(|state| Whoami { name: name.into(), state }).ok_or_else(refused))
    };
    let state_of = |holder: &str| pages.iter().find(|(n, _)| *n == holder).and_then(|(_, s)| *s);
    let through_vip = match through {
        Ok(holder) => page(holder, Some(state_of(holder).unwrap_or(VrrpState::Master))),
        Err(_) => page("", None),
    };
    let instances = pages.iter().map(|(name, state)| (name.to_string(), page(name, *state))).collect();
    VipRound { through_vip, failure: through.err(), instances }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(state: VrrpState) -> InstancePage {
        InstancePage { whoami: Some(Whoami { name: "x".into(), state }), ..InstancePage::default() }
    }

    #[test]
    fn whoami_pages_parse_to_a_name_and_a_state() {
        let w = Whoami::parse("haproxy2 master\n").unwrap();
        assert_eq!((w.name.as_str(), w.state), ("haproxy2", VrrpState::Master));
        assert_eq!(Whoami::parse("h BACKUP").unwrap().state, VrrpState::Backup);
        assert_eq!(Whoami::parse("h none").unwrap().state, VrrpState::Stopped);
        assert_eq!(Whoami::parse("h dancing").unwrap().state, VrrpState::Other);
        for bad in ["", "haproxy", "a b c", "<html>\n<body>503</body>"] {
            assert_eq!(Whoami::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn holder_masters_and_standbys() {
        let mut v = VipView::new(["haproxy".to_string(), "haproxy2".to_string()]);
        assert_eq!((v.holder(), v.answer_kind(), v.masters()), (None, None, 0));
        v.answer = Some(Ok(Whoami { name: "haproxy".into(), state: VrrpState::Master }));
        v.instances.insert("haproxy".into(), page(VrrpState::Master));
        v.instances.insert("haproxy2".into(), page(VrrpState::Backup));
        assert_eq!((v.holder(), v.answer_kind(), v.masters()), (Some("haproxy"), Some(Answer::Held), 1));
        assert_eq!(v.standbys(|_| true), 1);
        assert_eq!(v.standbys(|n| n != "haproxy2"), 0, "a backup whose HAProxy routes nowhere is no standby");
        v.instances.insert("haproxy2".into(), page(VrrpState::Master));
        assert_eq!((v.masters(), v.standbys(|_| true)), (2, 0));
        v.answer = Some(Err(Answer::Refused));
        assert_eq!((v.holder(), v.answer_kind()), (None, Some(Answer::Refused)));
        v.instances.insert("haproxy2".into(), InstancePage::default());
        assert_eq!(v.instances["haproxy2"].state(), VrrpState::Unknown);
    }
}
