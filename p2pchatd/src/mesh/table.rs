//! Who we know and which link carries each of them.
//!
//! The table is plain data under the mesh's lock: every change to a peer's
//! link state happens here, in one place, together with the join/leave/nick
//! event it causes, so history never disagrees with `peers`. It decides the
//! one-link-per-pair rule (PROTOCOL §3) and when a peer needs dialing; the
//! mesh acts on what it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::api::{LinkDirection, PeerInfo, PeerKind, Trust};
use shared::event::EventBody;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::LinkStats;
use super::admission::{
    Contender, MAX_ACCEPTED_PER_ADDRESS, MAX_LINKS, MAX_UNLINKED, MAX_UNLINKED_PER_ADDRESS,
    MAX_UNPROVEN, MAX_UNPROVEN_PER_ADDRESS, new_link_wins,
};
use crate::history::History;
use crate::trust::Standing;
use shared::keys::{KEY_LEN, fingerprint_of};

/// Identifies one TCP link for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LinkId(pub u64);

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A peer heard on the discovery group.
#[derive(Debug, Clone)]
pub(crate) struct Sighting {
    pub peer_id: String,
    /// The nick it announces...
    pub nick: String,
    /// ... and how it is shown: never as a nick another key holds.
    pub shown: String,
    /// Datagram source IP with the announced port.
    pub addr: SocketAddr,
    /// `announce`/`ping`/`pong` (true) or `leave` (false).
    pub alive: bool,
    /// It carried our metadata: a p2pchatd peer that will answer our dial.
    pub p2pchatd: bool,
    /// It speaks Noise links.
    pub noise: bool,
    /// The sender's life, when it says (p2pchatd peers do).
    pub instance: Option<String>,
}

#[derive(Debug)]
struct Peer {
    /// Its nick as shown: `nick~tag` when another key holds the nick.
    nick: String,
    /// Its nick as its link last said it.
    said: String,
    dial_addr: Option<SocketAddr>,
    /// Where discovery last heard it from: what proves a link from there.
    heard_from: Option<IpAddr>,
    /// Its life as its announces last said.
    instance: Option<String>,
    /// It announced that it speaks Noise.
    noise: bool,
    /// The identity key its last encrypted link proved.
    key: Option<[u8; KEY_LEN]>,
    trust: Option<Trust>,
    /// A join was recorded for its current link (see `attach` for when).
    shown: bool,
    last_seen: Instant,
    kind: Option<PeerKind>,
    link: Option<LinkId>,
    /// The dial loop that serves it, if one runs.
    dialing: Option<Dialer>,
    /// It said goodbye; not redialed, and its stale announces are ignored
    /// until it is forgotten.
    quit: bool,
}

/// A dial loop's claim on a peer. Dropped with the peer's entry (evicted,
/// expired) or when the loop is told to stop, it revokes the loop, which
/// may be waiting for a dial slot: forgotten peers cost no waiting tasks.
#[derive(Debug)]
struct Dialer {
    id: u64,
    revoked: CancellationToken,
}

impl Drop for Dialer {
    fn drop(&mut self) {
        self.revoked.cancel();
    }
}

/// What a new dial loop gets: its id and the token that revokes it.
#[derive(Debug)]
pub(crate) struct DialClaim {
    pub id: u64,
    pub revoked: CancellationToken,
}

#[derive(Debug)]
struct Link {
    peer: Option<Arc<str>>,
    direction: LinkDirection,
    remote: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
    stats: Arc<LinkStats>,
    /// The negotiated heartbeat of a p2pchatd link; `None` toward Go.
    heartbeat: Option<Duration>,
    /// The identity key the link proved (Noise); `None` on plaintext.
    key: Option<[u8; KEY_LEN]>,
    /// Its peer takes `seal` lines.
    seals: bool,
    /// Its peer takes part in catch-up, and confirms what it holds.
    sync: bool,
    /// What its peer last said of being away (p2pchatd peers).
    away: Option<String>,
    /// Its peer takes rooms and direct messages.
    takes_rooms: bool,
    /// Its peer takes file offers.
    takes_files: bool,
    /// The rooms its peer is in besides `#general`, as it last said, and
    /// whether it said so yet.
    rooms: Arc<BTreeSet<String>>,
    rooms_said: bool,
}

impl Link {
    /// Silent for two heartbeat periods: it missed one whole. A Go link is
    /// silent when idle, so only TCP can tell it is dead.
    fn dead(&self) -> bool {
        self.heartbeat
            .is_some_and(|h| self.stats.silent_for() > h * 2)
    }

    fn unproven(&self) -> bool {
        self.direction == LinkDirection::Accepted && !self.stats.proven()
    }
}

/// A link as it is registered.
pub(crate) struct NewLink {
    pub direction: LinkDirection,
    pub remote: SocketAddr,
    /// Known at once for accepted links and identified dials; `None` for a
    /// `--peer` dial to a silent (Go) acceptor until its first line.
    pub peer: Option<PeerIdentity>,
    pub tx: mpsc::Sender<Bytes>,
    pub close: CancellationToken,
    pub stats: Arc<LinkStats>,
    pub heartbeat: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct PeerIdentity {
    pub id: Arc<str>,
    /// The nick it says.
    pub nick: String,
    pub kind: PeerKind,
    /// The identity key a Noise link proved; `None` on plaintext links.
    pub key: Option<[u8; KEY_LEN]>,
    /// It takes `seal` and `relay` lines (a Noise hello said so).
    pub seals: bool,
    /// Its life (a Noise hello said it): what its seals are of.
    pub life: Option<Arc<str>>,
    /// It takes part in catch-up (a Noise hello said so).
    pub sync: bool,
    /// It takes rooms and direct messages (a Noise hello said so).
    pub rooms: bool,
    /// It takes file offers (a Noise hello said so).
    pub files: bool,
    /// How it is shown, once judged (see `trust`).
    pub standing: Option<Standing>,
}

impl PeerIdentity {
    /// The nick it is shown by.
    pub(crate) fn shown(&self) -> &str {
        self.standing.as_ref().map_or(&self.nick, |s| &s.shown)
    }

    pub(crate) fn trust(&self) -> Option<Trust> {
        self.standing.as_ref().map(|s| s.trust)
    }
}

/// Where and whom a dial loop dials next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DialPlan {
    pub addr: SocketAddr,
    pub nick: String,
    /// The peer will answer our join (p2pchatd) rather than stay silent (Go).
    pub p2pchatd: bool,
    /// The peer speaks Noise.
    pub noise: bool,
}

/// A link our lines go to: its inbox, and how to close it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub id: LinkId,
    pub tx: mpsc::Sender<Bytes>,
    pub close: CancellationToken,
    /// Its peer takes `seal` lines.
    pub seals: bool,
    pub peer: Option<Arc<str>>,
    /// Its peer takes part in catch-up.
    pub sync: bool,
    /// Its peer takes rooms and direct messages, and is in these rooms
    /// besides `#general`.
    pub takes_rooms: bool,
    pub rooms: Arc<BTreeSet<String>>,
}

/// Whom a line of ours goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'a> {
    /// Every link (a `#general` line: Go peers too).
    All,
    /// Links to peers that take `seal` lines.
    Seals,
    /// Links to peers that take rooms (a `rooms` line).
    Rooms,
    /// Links to the peers in a room (`#name`).
    Room(&'a str),
    /// The link to one peer, if it takes direct messages.
    Peer(&'a str),
    /// Links that keep sealed runs for others (catch-up and rooms), but
    /// this peer's: where a direct message waits for its recipient.
    KeepersBut(&'a str),
}

impl Target {
    pub(crate) fn takes(&self, audience: Audience<'_>) -> bool {
        audience.takes(
            self.seals,
            self.sync,
            self.takes_rooms,
            self.peer.as_deref(),
            &self.rooms,
        )
    }
}

impl Audience<'_> {
    fn takes(
        self,
        seals: bool,
        sync: bool,
        takes_rooms: bool,
        peer: Option<&str>,
        rooms: &BTreeSet<String>,
    ) -> bool {
        match self {
            Self::All => true,
            Self::Seals => seals,
            Self::Rooms => takes_rooms,
            Self::Room(r) => takes_rooms && rooms.contains(r),
            Self::Peer(p) => takes_rooms && peer == Some(p),
            Self::KeepersBut(p) => takes_rooms && sync && peer != Some(p),
        }
    }
}

/// A peer as a nick shows it, for a direct message.
#[derive(Debug)]
pub(crate) struct Shown {
    pub id: Arc<str>,
    /// The key its last encrypted link proved.
    pub key: Option<[u8; KEY_LEN]>,
    pub trust: Option<Trust>,
    /// Whether its link takes direct messages; `None` while not linked.
    pub takes_rooms: Option<bool>,
    /// Whether its link takes file offers; `None` while not linked.
    pub takes_files: Option<bool>,
}

/// Why a link was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the link leads to ourselves")]
    SelfLink,
    #[error("a better link to this peer exists")]
    Duplicate,
    /// Someone claims the id of a peer whose link is healthy.
    #[error("it claims a peer that has a healthy link")]
    Taken,
    #[error("too many links")]
    Full,
    #[error("too many links from {0}")]
    TooManyFrom(IpAddr),
}

impl Refused {
    /// Logs the refusal of a link from `remote`: loudly what someone may
    /// be trying, quietly what is routine.
    pub(crate) fn log(&self, remote: SocketAddr) {
        match self {
            Self::Taken => tracing::warn!(%remote, "refused a link: {self}"),
            Self::Full | Self::TooManyFrom(_) => tracing::info!(%remote, "refused a link: {self}"),
            Self::SelfLink | Self::Duplicate => tracing::debug!(%remote, "refused a link: {self}"),
        }
    }
}

pub(crate) struct Table {
    me: Arc<str>,
    peers: HashMap<Arc<str>, Peer>,
    links: HashMap<LinkId, Link>,
    next_link: u64,
    next_dialer: u64,
    /// The links our lines go to; rebuilt after a change.
    targets: Option<Arc<[Target]>>,
}

/// The link a pair keeps is the one the smaller peer id dialed.
fn canonical(me: &str, peer: &str, dir: LinkDirection) -> bool {
    match dir {
        LinkDirection::Dialed => me < peer,
        LinkDirection::Accepted => peer < me,
    }
}

/// Whether `peers` lists it. Peers that said goodbye are kept only to
/// ignore their late announces; a link's peer is listed once it proved
/// itself (and shown with a join), so squatters do not fill the list.
fn listed(p: &Peer) -> bool {
    match p.link {
        Some(_) => p.shown,
        None => !p.quit,
    }
}

/// Shows `peer` as `standing` says; a change of the shown nick is a nick
/// event once its join was. Returns the old nick shown when it changed.
fn show_as(id: &str, peer: &mut Peer, standing: &Standing, history: &History) -> Option<String> {
    peer.trust = Some(standing.trust);
    if peer.nick == standing.shown {
        return None;
    }
    let old = std::mem::replace(&mut peer.nick, standing.shown.clone());
    if !peer.shown {
        return None;
    }
    history.append(EventBody::Nick {
        peer_id: id.to_owned(),
        old: old.clone(),
        new: standing.shown.clone(),
    });
    Some(old)
}

/// Records the peer's join for its current link, once (not after it said
/// goodbye).
fn show(id: &str, peer: &mut Peer, history: &History) {
    if !peer.shown && !peer.quit {
        peer.shown = true;
        history.append(EventBody::Join {
            peer_id: id.to_owned(),
            nick: peer.nick.clone(),
        });
    }
}

/// Records the peer's leave, if its join was recorded.
fn leave(id: &str, peer: &mut Peer, reason: &str, history: &History) {
    if std::mem::take(&mut peer.shown) {
        history.append(EventBody::Leave {
            peer_id: id.to_owned(),
            nick: peer.nick.clone(),
            reason: Some(reason.to_owned()),
        });
    }
}

impl Table {
    pub(crate) fn new(me: Arc<str>) -> Self {
        Self {
            me,
            peers: HashMap::new(),
            links: HashMap::new(),
            next_link: 1,
            next_dialer: 1,
            targets: None,
        }
    }

    /// Records a discovery datagram. Returns whether the peer is new (answer
    /// it at once) and the id of a dial loop to start, if it needs one.
    pub(crate) fn heard(
        &mut self,
        s: &Sighting,
        now: Instant,
        history: &History,
    ) -> (bool, Option<DialClaim>) {
        if *s.peer_id == *self.me {
            return (false, None);
        }
        if !s.alive {
            self.forget_on_leave_datagram(&s.peer_id);
            return (false, None);
        }
        let kind = if s.p2pchatd {
            PeerKind::P2pchatd
        } else {
            PeerKind::Go
        };
        let from = s.addr.ip();
        let links = &self.links;
        let new = match self.peers.get_mut(s.peer_id.as_str()) {
            // It said goodbye: its late announces are ignored, but a new
            // life of it (restarted, with the same key) is back.
            Some(p) if p.quit && (s.instance.is_none() || s.instance == p.instance) => {
                return (false, None);
            }
            Some(p) => {
                // A new life of a peer we know (it restarted) does not
                // know us yet: answer it at once, as a new peer.
                let reborn = s.instance.is_some() && s.instance != p.instance;
                p.quit = false;
                p.last_seen = now;
                p.instance.clone_from(&s.instance);
                // A linked peer's address is its link's: an announce in its
                // name from elsewhere proves nothing for a claimant there.
                let link_ip = p.link.and_then(|l| links.get(&l)).map(|l| l.remote.ip());
                if link_ip.is_none_or(|ip| ip == from) {
                    p.heard_from = Some(from);
                }
                if p.link.is_none() {
                    // Linked peers change nick through their link only, so a
                    // late datagram cannot undo a change.
                    p.nick.clone_from(&s.shown);
                    p.said.clone_from(&s.nick);
                    p.dial_addr = Some(s.addr);
                    p.kind = Some(kind);
                    p.noise = s.noise;
                }
                reborn
            }
            None => {
                if self.unlinked_from(from) >= MAX_UNLINKED_PER_ADDRESS {
                    tracing::debug!(%from, peer = s.peer_id, "ignored an announce: that address announces enough peers");
                    return (false, None);
                }
                self.peers.insert(
                    Arc::from(s.peer_id.as_str()),
                    Peer {
                        nick: s.shown.clone(),
                        said: s.nick.clone(),
                        dial_addr: Some(s.addr),
                        heard_from: Some(from),
                        instance: s.instance.clone(),
                        noise: s.noise,
                        key: None,
                        trust: None,
                        shown: false,
                        last_seen: now,
                        kind: Some(kind),
                        link: None,
                        dialing: None,
                        quit: false,
                    },
                );
                self.trim_unlinked();
                true
            }
        };
        self.prove_by_address(&s.peer_id, from, history);
        (new, self.claim_dial(&s.peer_id))
    }

    /// Discovery heard `peer` from `from`: a link from there is its own.
    fn prove_by_address(&mut self, peer: &str, from: IpAddr, history: &History) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(link) = p.link.and_then(|l| self.links.get(&l))
            && link.remote.ip() == from
            && !link.stats.proven()
        {
            link.stats.prove();
            show(peer, p, history);
        }
    }

    /// A chat line arrived on `link`: a peer that talks is no squatter.
    /// The link's peer says it is away (`Some`) or back.
    pub(crate) fn set_away(&mut self, link: LinkId, away: Option<String>) {
        if let Some(l) = self.links.get_mut(&link) {
            l.away = away;
        }
    }

    /// The link's peer said it is in `rooms` (besides `#general`): room
    /// events for what changed in the rooms we are in (`ours`), once the
    /// peer is shown and `said` (not past the rate); none for the link's
    /// first word on it (its join says it came).
    /// Returns the rooms it is in now and was not before (all of them on
    /// its first word), and whether this was its first word.
    pub(crate) fn set_rooms(
        &mut self,
        link: LinkId,
        rooms: BTreeSet<String>,
        ours: &BTreeSet<String>,
        said: bool,
        history: &History,
    ) -> (Vec<String>, bool) {
        let Some(l) = self.links.get_mut(&link) else {
            return (Vec::new(), false);
        };
        if l.rooms_said && *l.rooms == rooms {
            return (Vec::new(), false);
        }
        let old = std::mem::replace(&mut l.rooms, Arc::new(rooms));
        let new = l.rooms.clone();
        let first = !std::mem::replace(&mut l.rooms_said, true);
        let added = new.difference(&old).cloned().collect();
        self.targets = None;
        if first || !said {
            return (added, first);
        }
        let Some(id) = l.peer.clone() else {
            return (added, false);
        };
        let Some(p) = self
            .peers
            .get(&id)
            .filter(|p| p.link == Some(link) && p.shown)
        else {
            return (added, false);
        };
        let changes = new
            .difference(&old)
            .map(|r| (r, true))
            .chain(old.difference(&new).map(|r| (r, false)))
            .filter(|(r, _)| ours.contains(*r));
        for (room, joined) in changes {
            history.append(EventBody::Room {
                peer_id: id.to_string(),
                nick: p.nick.clone(),
                room: room.clone(),
                joined,
            });
        }
        (added, false)
    }

    /// The rooms a link's peer is in besides `#general`, if it takes rooms.
    pub(crate) fn link_rooms(&self, link: LinkId) -> Option<Arc<BTreeSet<String>>> {
        self.links
            .get(&link)
            .filter(|l| l.takes_rooms)
            .map(|l| l.rooms.clone())
    }

    /// The rooms linked peers are in, with the nicks (as shown) in each.
    pub(crate) fn rooms(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in self.peers.values().filter(|p| p.shown) {
            if let Some(l) = p.link.and_then(|l| self.links.get(&l)) {
                for r in l.rooms.iter() {
                    out.entry(r.clone()).or_default().push(p.nick.clone());
                }
            }
        }
        for nicks in out.values_mut() {
            nicks.sort();
        }
        out
    }

    /// The peer shown as `nick` (linked or only known), and what it is:
    /// its id, its key if one proved itself, and whether its link (if
    /// any) takes direct messages.
    pub(crate) fn shown_as(&self, nick: &str) -> Option<Shown> {
        self.peers
            .iter()
            .filter(|(_, p)| p.nick == nick && listed(p))
            .max_by_key(|(_, p)| p.link.is_some())
            .map(|(id, p)| {
                let link = p.link.and_then(|l| self.links.get(&l));
                Shown {
                    id: id.clone(),
                    key: p.key,
                    trust: p.trust,
                    takes_rooms: link.map(|l| l.takes_rooms),
                    takes_files: link.map(|l| l.takes_files),
                }
            })
    }

    pub(crate) fn talked(&mut self, link: LinkId, history: &History) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        l.stats.prove();
        if let Some(id) = &l.peer
            && let Some(p) = self.peers.get_mut(id)
            && p.link == Some(link)
        {
            show(id, p, history);
        }
    }

    /// Unlinked peers discovery heard from `from`.
    fn unlinked_from(&self, from: IpAddr) -> usize {
        self.peers
            .values()
            .filter(|p| p.link.is_none() && p.heard_from == Some(from))
            .count()
    }

    /// Forgets unlinked peers beyond the bound: the longest unheard of
    /// the address that announces the most, so a flood from a few
    /// addresses crowds out itself, not a lone peer at its own.
    fn trim_unlinked(&mut self) {
        let unlinked = self.peers.values().filter(|p| p.link.is_none()).count();
        for _ in MAX_UNLINKED..unlinked {
            let mut per_address: HashMap<Option<IpAddr>, usize> = HashMap::new();
            for p in self.peers.values().filter(|p| p.link.is_none()) {
                *per_address.entry(p.heard_from).or_default() += 1;
            }
            let most = per_address.values().copied().max().unwrap_or(0);
            let oldest = self
                .peers
                .iter()
                .filter(|(_, p)| p.link.is_none() && per_address.get(&p.heard_from) == Some(&most))
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.peers.remove(&id),
                None => break,
            };
        }
    }

    /// A `leave` datagram proves nothing: anyone on the LAN can send one in
    /// any peer's name. So it never ends a link or a dial (only the link's
    /// own `leave` or its death does); it only forgets a peer we neither
    /// link nor dial, which its next announce brings back.
    fn forget_on_leave_datagram(&mut self, id: &str) {
        if self
            .peers
            .get(id)
            .is_some_and(|p| p.link.is_none() && p.dialing.is_none() && !p.quit)
        {
            self.peers.remove(id);
        }
    }

    /// If the peer needs dialing and nobody dials it yet, claims it for a
    /// new dial loop and returns that loop's id: the caller starts it.
    pub(crate) fn claim_dial(&mut self, peer: &str) -> Option<DialClaim> {
        let me = &*self.me;
        let p = self.peers.get_mut(peer)?;
        if me < peer && !p.quit && p.dialing.is_none() && p.link.is_none() && p.dial_addr.is_some()
        {
            let id = self.next_dialer;
            self.next_dialer += 1;
            let revoked = CancellationToken::new();
            p.dialing = Some(Dialer {
                id,
                revoked: revoked.clone(),
            });
            Some(DialClaim { id, revoked })
        } else {
            None
        }
    }

    /// Dial loop `dialer` asks where to dial next: `None` tells it to stop
    /// (the peer is forgotten, quit, linked by its own dial, or served by a
    /// newer loop) and releases its claim.
    pub(crate) fn dial_plan(&mut self, peer: &str, dialer: u64) -> Option<DialPlan> {
        let p = self.peers.get_mut(peer)?;
        if p.dialing.as_ref().map(|d| d.id) != Some(dialer) {
            return None;
        }
        match p.dial_addr {
            Some(addr) if !p.quit && p.link.is_none() => Some(DialPlan {
                addr,
                nick: p.nick.clone(),
                p2pchatd: p.kind == Some(PeerKind::P2pchatd),
                noise: p.noise,
            }),
            _ => {
                p.dialing = None;
                None
            }
        }
    }

    /// Dial loop `dialer` ended (also when it was cancelled).
    pub(crate) fn dial_stopped(&mut self, peer: &str, dialer: u64) {
        if let Some(p) = self
            .peers
            .get_mut(peer)
            .filter(|p| p.dialing.as_ref().map(|d| d.id) == Some(dialer))
        {
            p.dialing = None;
        }
    }

    /// Takes a new link. With its peer known it is attached at once.
    pub(crate) fn register(
        &mut self,
        link: NewLink,
        now: Instant,
        history: &History,
    ) -> Result<LinkId, Refused> {
        // Room is needed only if the link adds to the table rather than
        // replacing one of its peer's.
        let grows = link
            .peer
            .as_ref()
            .is_none_or(|w| self.peers.get(&w.id).is_none_or(|p| p.link.is_none()));
        if grows && self.links.len() >= MAX_LINKS && !self.evict_for_room(history) {
            return Err(Refused::Full);
        }
        let id = LinkId(self.next_link);
        self.next_link += 1;
        let peer = link.peer;
        self.links.insert(
            id,
            Link {
                peer: None,
                direction: link.direction,
                remote: link.remote,
                tx: link.tx,
                close: link.close,
                stats: link.stats,
                heartbeat: link.heartbeat,
                key: peer.as_ref().and_then(|w| w.key),
                seals: peer.as_ref().is_some_and(|w| w.seals),
                sync: peer.as_ref().is_some_and(|w| w.sync),
                away: None,
                takes_rooms: peer.as_ref().is_some_and(|w| w.rooms),
                takes_files: peer.as_ref().is_some_and(|w| w.files),
                rooms: Arc::default(),
                rooms_said: false,
            },
        );
        match peer {
            Some(who) => self
                .attach(id, who, now, history)
                .map(|()| id)
                .inspect_err(|_| {
                    self.links.remove(&id);
                }),
            None => {
                self.targets = None;
                Ok(id)
            }
        }
    }

    /// Files a link under its peer, enforcing one link per pair and the
    /// bounds on accepted links (see [`super::admission`]).
    pub(crate) fn attach(
        &mut self,
        id: LinkId,
        who: PeerIdentity,
        now: Instant,
        history: &History,
    ) -> Result<(), Refused> {
        if *who.id == *self.me {
            return Err(Refused::SelfLink);
        }
        let Some(link) = self.links.get(&id) else {
            return Err(Refused::Duplicate);
        };
        let (direction, remote, stats) = (link.direction, link.remote, link.stats.clone());
        let existing = self.peers.get(&who.id);
        if existing.is_some_and(|p| p.heard_from == Some(remote.ip())) {
            stats.prove();
        }
        let old = existing.and_then(|p| p.link);
        if let Some(old) = old.and_then(|o| self.links.get(&o)) {
            let rank = |dir, proven| Contender {
                canonical: canonical(&self.me, &who.id, dir),
                proven,
                dead: false,
            };
            let theirs = Contender {
                dead: old.dead(),
                ..rank(old.direction, old.stats.proven())
            };
            // The same key is the peer itself, wherever it comes from.
            let same_host =
                old.remote.ip() == remote.ip() || (who.key.is_some() && old.key == who.key);
            if !new_link_wins(theirs, rank(direction, stats.proven()), same_host) {
                return Err(if same_host {
                    Refused::Duplicate
                } else {
                    Refused::Taken
                });
            }
        } else if direction == LinkDirection::Accepted {
            self.admit_accepted(id, remote.ip(), stats.proven(), history)?;
        }
        if let Some(old_link) = old.and_then(|o| self.links.remove(&o)) {
            tracing::info!(peer = %who.id, old = ?old, new = %id, "link replaced");
            old_link.close.cancel();
        }
        let peer = self.peers.entry(who.id.clone()).or_insert_with(|| Peer {
            nick: who.shown().to_owned(),
            said: who.nick.clone(),
            dial_addr: None,
            heard_from: None,
            instance: None,
            noise: false,
            key: None,
            trust: None,
            shown: false,
            last_seen: now,
            kind: None,
            link: None,
            dialing: None,
            quit: false,
        });
        if peer.link.is_none() {
            who.shown().clone_into(&mut peer.nick);
            peer.said.clone_from(&who.nick);
            peer.shown = false;
        }
        peer.link = Some(id);
        peer.kind = Some(who.kind);
        peer.key = who.key.or(peer.key);
        peer.trust = who.trust().or(peer.trust);
        peer.last_seen = now;
        peer.quit = false;
        if peer.dial_addr.is_none() && direction == LinkDirection::Dialed {
            peer.dial_addr = Some(remote);
        }
        // A p2pchatd peer is shown at once: it must keep heartbeating to
        // stay, and a `--peer` that dials us has no announce to prove it.
        // A Go-style link is shown once it proves itself, so a silent
        // squatter leaves no trace.
        if stats.proven() || who.kind == PeerKind::P2pchatd {
            show(&who.id, peer, history);
        }
        if let Some(link) = self.links.get_mut(&id) {
            link.peer = Some(who.id);
        }
        self.targets = None;
        Ok(())
    }

    /// Room for a new accepted link from `from`: its address may hold only
    /// so many, and unproven ones are fewer still; when all the unproven
    /// room is taken, the idlest unproven link makes way.
    fn admit_accepted(
        &mut self,
        id: LinkId,
        from: IpAddr,
        proven: bool,
        history: &History,
    ) -> Result<(), Refused> {
        let others = || {
            self.links
                .iter()
                .filter(move |(l, link)| **l != id && link.peer.is_some())
                .map(|(_, link)| link)
        };
        let accepted = |link: &&Link| link.direction == LinkDirection::Accepted;
        let here = |link: &&Link| link.remote.ip() == from;
        if others().filter(accepted).filter(here).count() >= MAX_ACCEPTED_PER_ADDRESS {
            return Err(Refused::TooManyFrom(from));
        }
        if proven {
            return Ok(());
        }
        if others().filter(|l| l.unproven()).filter(here).count() >= MAX_UNPROVEN_PER_ADDRESS {
            return Err(Refused::TooManyFrom(from));
        }
        if others().filter(|l| l.unproven()).count() >= MAX_UNPROVEN {
            self.evict_idlest(Some(id), history, Link::unproven);
        }
        Ok(())
    }

    /// Makes room in a full table: the idlest unproven link goes, else the
    /// idlest accepted plaintext (Go-style) one, which nothing but an
    /// address vouches for. Links with keys and links we dialed stay.
    /// False when there is nothing to evict.
    fn evict_for_room(&mut self, history: &History) -> bool {
        self.evict_idlest(None, history, Link::unproven)
            || self.evict_idlest(None, history, |l| {
                l.direction == LinkDirection::Accepted && l.heartbeat.is_none()
            })
    }

    /// Drops the link that has been silent longest among those `which`
    /// picks (never `keep`). False when there is none.
    fn evict_idlest(
        &mut self,
        keep: Option<LinkId>,
        history: &History,
        which: impl Fn(&Link) -> bool,
    ) -> bool {
        let idlest = self
            .links
            .iter()
            .filter(|(l, link)| Some(**l) != keep && which(link))
            .max_by_key(|(_, link)| link.stats.silent_for())
            .map(|(l, _)| *l);
        let Some(id) = idlest else {
            return false;
        };
        if let Some(link) = self.links.remove(&id) {
            tracing::info!(link = %id, remote = %link.remote, "evicted an idle link to make room");
            link.close.cancel();
            if let Some(who) = link.peer
                && let Some(p) = self.peers.get_mut(&who)
                && p.link == Some(id)
            {
                p.link = None;
                leave(&who, p, "evicted", history);
            }
        }
        self.targets = None;
        true
    }

    /// A link ended. Returns its peer when that peer now has no link.
    pub(crate) fn closed(
        &mut self,
        id: LinkId,
        reason: &str,
        now: Instant,
        history: &History,
    ) -> Option<Arc<str>> {
        let link = self.links.remove(&id)?;
        self.targets = None;
        let who = link.peer?;
        let peer = self.peers.get_mut(&who)?;
        if peer.link != Some(id) {
            return None; // a replaced link
        }
        peer.link = None;
        peer.last_seen = now;
        if !peer.quit {
            leave(&who, peer, reason, history);
        }
        peer.shown = false;
        self.trim_unlinked();
        Some(who)
    }

    /// The peer said goodbye on `link`: one leave event, its link closed,
    /// no redial. Only the peer's current link speaks for it: a leave on a
    /// replaced, evicted or claimant's link is nobody's.
    pub(crate) fn quit(&mut self, link: LinkId, history: &History) {
        let Some(id) = self.links.get(&link).and_then(|l| l.peer.clone()) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.quit || peer.link != Some(link) {
            return;
        }
        peer.quit = true;
        if let Some(l) = self.links.get(&link) {
            l.close.cancel();
        }
        leave(&id, peer, "quit", history);
    }

    /// A linked peer said another nick, shown as `standing` says.
    /// Returns the old nick shown when it changed.
    pub(crate) fn renamed(
        &mut self,
        id: &str,
        said: &str,
        standing: &Standing,
        history: &History,
    ) -> Option<String> {
        let peer = self.peers.get_mut(id)?;
        said.clone_into(&mut peer.said);
        show_as(id, peer, standing, history)
    }

    /// Who holds which nick changed (`trust`, `forget`): every linked peer
    /// is judged again, and one now shown by another name is announced as
    /// a nick change.
    pub(crate) fn reconsider(
        &mut self,
        mut judge: impl FnMut(Option<&[u8; KEY_LEN]>, &str) -> Standing,
        history: &History,
    ) {
        for (id, peer) in &mut self.peers {
            if peer.link.is_some() {
                let standing = judge(peer.key.as_ref(), &peer.said);
                show_as(id, peer, &standing, history);
            }
        }
    }

    /// How a linked peer is shown, and its trust, for its link's reader.
    pub(crate) fn shown(&self, id: &str) -> Option<(String, Option<Trust>)> {
        self.peers.get(id).map(|p| (p.nick.clone(), p.trust))
    }

    /// Forgets unlinked peers not seen for `expiry`.
    /// Returns whether the table shrank (a flood of announces expired).
    pub(crate) fn expire(&mut self, now: Instant, expiry: Duration) -> bool {
        self.peers
            .retain(|_, p| p.link.is_some() || now.duration_since(p.last_seen) < expiry);
        // A flood of announces grew the table; give the memory back.
        let shrink = self.peers.capacity() > 4 * self.peers.len().max(16);
        if shrink {
            self.peers.shrink_to_fit();
        }
        shrink
    }

    /// The senders our own lines go to: every link but replaced ones.
    pub(crate) fn targets(&mut self) -> Arc<[Target]> {
        self.targets
            .get_or_insert_with(|| {
                self.links
                    .iter()
                    .map(|(id, l)| Target {
                        id: *id,
                        tx: l.tx.clone(),
                        close: l.close.clone(),
                        seals: l.seals,
                        peer: l.peer.clone(),
                        sync: l.sync,
                        takes_rooms: l.takes_rooms,
                        rooms: l.rooms.clone(),
                    })
                    .collect()
            })
            .clone()
    }

    pub(crate) fn knows_go_peers(&self) -> bool {
        self.peers.values().any(|p| p.kind == Some(PeerKind::Go))
    }

    /// The peers linked now (shown as joined) that `audience` reaches:
    /// id, nick as shown, and whether it confirms what it holds (takes
    /// part in catch-up).
    pub(crate) fn audience(&self, audience: Audience<'_>) -> Vec<(Arc<str>, String, bool)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.shown)
            .filter_map(|(id, p)| {
                let l = self.links.get(&p.link?)?;
                audience
                    .takes(l.seals, l.sync, l.takes_rooms, Some(id), &l.rooms)
                    .then(|| (id.clone(), p.nick.clone(), l.sync))
            })
            .collect()
    }

    /// Where peer `id` listens, if known (`true`), else its link's address
    /// (`false`: the host is right, the port is the link's own).
    pub(crate) fn listen_addr(&self, id: &str) -> Option<(SocketAddr, bool)> {
        let p = self.peers.get(id)?;
        if let Some(a) = p.dial_addr {
            return Some((a, true));
        }
        let link = self.links.get(&p.link?)?;
        Some((link.remote, false))
    }

    pub(crate) fn is_linked(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| p.link.is_some())
    }

    /// Closes every link (shutdown).
    pub(crate) fn close_all(&self) {
        for l in self.links.values() {
            l.close.cancel();
        }
    }

    pub(crate) fn connected(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.link.is_some() && p.shown)
            .count()
    }

    /// Peers known, not counting those that said goodbye, nor a link's
    /// claimed peer before it proved itself.
    pub(crate) fn known(&self) -> usize {
        self.peers.values().filter(|p| listed(p)).count()
    }

    pub(crate) fn peers(&self, now: Instant) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .peers
            .iter()
            .filter(|(_, p)| listed(p))
            .map(|(id, p)| {
                let link = p.link.and_then(|l| self.links.get(&l));
                PeerInfo {
                    peer_id: id.to_string(),
                    nick: p.nick.clone(),
                    addr: p
                        .dial_addr
                        .or(link.map(|l| l.remote))
                        .map(|a| a.to_string()),
                    connected: link.is_some(),
                    link: link.map(|l| l.direction),
                    kind: p.kind,
                    encrypted: link.is_some_and(|l| l.key.is_some()),
                    fingerprint: p.key.as_ref().map(fingerprint_of),
                    trust: p.trust,
                    last_seen_ms: Some(shared::millis(if link.is_some() {
                        Duration::ZERO
                    } else {
                        now.duration_since(p.last_seen)
                    })),
                    away: link.and_then(|l| l.away.clone()),
                    rooms: link
                        .map(|l| l.rooms.iter().cloned().collect())
                        .unwrap_or_default(),
                    lines_in: link.map(|l| l.stats.lines()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.nick.cmp(&b.nick).then_with(|| a.peer_id.cmp(&b.peer_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinkDirection::{Accepted, Dialed};

    /// How a peer without a key that nobody's nick clashes with is shown.
    fn plain(nick: &str) -> Standing {
        Standing {
            trust: Trust::Plaintext,
            shown: nick.into(),
            alert: None,
        }
    }

    /// A p2pchatd peer speaking Noise, announced from loopback.
    fn sighting(id: &str, alive: bool) -> Sighting {
        Sighting {
            peer_id: id.into(),
            nick: id.into(),
            shown: id.into(),
            addr: "127.0.0.1:9".parse().unwrap(),
            alive,
            p2pchatd: true,
            noise: true,
            instance: None,
        }
    }

    /// A sighting's outcome with the dial claim as its id.
    fn ids((new, claim): (bool, Option<DialClaim>)) -> (bool, Option<u64>) {
        (new, claim.map(|c| c.id))
    }

    #[test]
    fn the_smaller_ids_dial_is_canonical_at_both_ends() {
        // me = "b"; peer "a" is smaller: canonical is the link "a" dialed.
        assert!(canonical("b", "a", Accepted));
        assert!(!canonical("b", "a", Dialed));
        assert!(canonical("a", "b", Dialed));
        // One physical link seen from both ends: directions flip, and both
        // ends agree whether it is the canonical one.
        let flip = |d| if d == Dialed { Accepted } else { Dialed };
        for dir in [Dialed, Accepted] {
            assert_eq!(canonical("a", "b", dir), canonical("b", "a", flip(dir)));
        }
    }

    fn link_as(
        table: &mut Table,
        dir: LinkDirection,
        peer: Option<&str>,
        kind: PeerKind,
        h: &History,
    ) -> (
        Result<LinkId, Refused>,
        CancellationToken,
        mpsc::Receiver<Bytes>,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let close = CancellationToken::new();
        let r = table.register(
            NewLink {
                direction: dir,
                remote: "127.0.0.1:1".parse().unwrap(),
                peer: peer.map(|p| PeerIdentity {
                    id: p.into(),
                    nick: format!("nick-{p}"),
                    kind,
                    key: None,
                    seals: false,
                    life: None,
                    sync: false,
                    rooms: false,
                    files: false,
                    standing: None,
                }),
                tx,
                close: close.clone(),
                stats: Arc::new(LinkStats::new(dir == Dialed)),
                heartbeat: Some(Duration::from_secs(2)),
            },
            Instant::now(),
            h,
        );
        (r, close, rx)
    }

    fn link(
        table: &mut Table,
        dir: LinkDirection,
        peer: Option<&str>,
        h: &History,
    ) -> (
        Result<LinkId, Refused>,
        CancellationToken,
        mpsc::Receiver<Bytes>,
    ) {
        link_as(table, dir, peer, PeerKind::P2pchatd, h)
    }

    fn kinds(h: &History) -> Vec<String> {
        let mut out = Vec::new();
        testkit::block_on(h.page(100, None, None)).write_json(&mut out);
        let evs: Vec<shared::event::Event> = serde_json::from_slice(&out).unwrap();
        evs.iter().map(|e| e.body.kind().to_owned()).collect()
    }

    #[test]
    fn duplicate_links_resolve_to_one_with_one_join() {
        let h = History::new(100);
        let mut t = Table::new("b".into());
        let (l1, c1, _r1) = link(&mut t, Dialed, Some("a"), &h);
        assert!(l1.is_ok());
        // "a" dials us: canonical, replaces ours.
        let (l2, c2, _r2) = link(&mut t, Accepted, Some("a"), &h);
        assert!(l2.is_ok() && c1.is_cancelled() && !c2.is_cancelled());
        // Our second dial loses against the canonical link.
        let (l3, _c3, _r3) = link(&mut t, Dialed, Some("a"), &h);
        assert_eq!(l3, Err(Refused::Duplicate));
        assert_eq!(t.connected(), 1);
        assert_eq!(t.targets().len(), 1);
        // The replaced link's end is silent; the live one's is a leave.
        assert_eq!(t.closed(l1.unwrap(), "x", Instant::now(), &h), None);
        assert_eq!(
            t.closed(l2.unwrap(), "gone", Instant::now(), &h).as_deref(),
            Some("a")
        );
        assert_eq!(kinds(&h), vec!["join", "leave"]);
    }

    #[test]
    fn self_links_are_refused() {
        let h = History::new(10);
        let mut t = Table::new("me".into());
        assert_eq!(
            link(&mut t, Accepted, Some("me"), &h).0,
            Err(Refused::SelfLink)
        );
        assert_eq!(t.targets().len(), 0);
    }

    #[test]
    fn only_the_smaller_id_dials_and_quit_peers_stay_quiet() {
        let h = History::new(10);
        let mut t = Table::new("m".into());
        let now = Instant::now();
        let s = sighting;
        assert_eq!(ids(t.heard(&s("z", true), now, &h)), (true, Some(1)));
        assert_eq!(
            ids(t.heard(&s("z", true), now, &h)),
            (false, None),
            "already dialing"
        );
        assert_eq!(
            ids(t.heard(&s("a", true), now, &h)),
            (true, None),
            "a dials us"
        );
        assert_eq!(
            ids(t.heard(&s("m", true), now, &h)),
            (false, None),
            "ourselves"
        );
        let plan = t.dial_plan("z", 1).unwrap();
        assert_eq!(
            (plan.nick.as_str(), plan.p2pchatd, plan.noise),
            ("z", true, true)
        );
        assert_eq!(t.dial_plan("z", 7), None, "not this loop's peer");
        let (l, c, _r) = link(&mut t, Dialed, Some("z"), &h);
        assert_eq!(t.dial_plan("z", 1), None, "linked: the dialer stops");
        ids(t.heard(&s("z", false), now, &h));
        assert!(
            t.is_linked("z") && !c.is_cancelled(),
            "a datagram never ends a link"
        );
        t.quit(l.unwrap(), &h); // the link's own leave
        assert_eq!(t.closed(l.unwrap(), "eof", now, &h).as_deref(), Some("z"));
        assert_eq!(kinds(&h), vec!["join", "leave"], "one leave, the quit");
        assert_eq!(
            ids(t.heard(&s("z", true), now, &h)),
            (false, None),
            "a late announce"
        );
        t.expire(now + Duration::from_secs(31), Duration::from_secs(30));
        assert_eq!(t.known(), 0);
    }

    #[test]
    fn a_leave_datagram_forgets_only_a_peer_nobody_links_or_dials() {
        let h = History::new(10);
        let mut t = Table::new("m".into());
        let now = Instant::now();
        let s = sighting;
        // "z" is ours to dial: a leave does not stop the dial.
        assert_eq!(ids(t.heard(&s("z", true), now, &h)), (true, Some(1)));
        ids(t.heard(&s("z", false), now, &h));
        assert!(t.dial_plan("z", 1).is_some(), "still dialed");
        // "a" dials us: unlinked and not dialed, so it is forgotten, and
        // its next announce makes it new again.
        assert_eq!(ids(t.heard(&s("a", true), now, &h)), (true, None));
        ids(t.heard(&s("a", false), now, &h));
        assert_eq!(t.known(), 1);
        assert_eq!(ids(t.heard(&s("a", true), now, &h)), (true, None));
    }

    #[test]
    fn a_forgotten_peer_revokes_its_dial_loop() {
        let h = History::new(10);
        let mut t = Table::new("m".into());
        let now = Instant::now();
        let z = sighting("z", true);
        let claim = t.heard(&z, now, &h).1.unwrap();
        assert!(!claim.revoked.is_cancelled());
        t.expire(now + Duration::from_secs(31), Duration::from_secs(30));
        assert!(
            claim.revoked.is_cancelled(),
            "no loop waits for a slot in vain"
        );
    }

    #[test]
    fn renames_once() {
        let h = History::new(10);
        let mut t = Table::new("m".into());
        let _l = link(&mut t, Dialed, Some("z"), &h);
        let zoe = plain("zoe");
        assert_eq!(t.renamed("z", "zoe", &zoe, &h).as_deref(), Some("nick-z"));
        assert_eq!(t.renamed("z", "zoe", &zoe, &h), None);
        assert_eq!(kinds(&h), vec!["join", "nick"]);
    }

    #[test]
    fn an_unproven_go_link_is_shown_once_it_proves_itself() {
        let h = History::new(10);
        let mut t = Table::new("m".into());
        let (l, _c, _r) = link_as(&mut t, Accepted, Some("a"), PeerKind::Go, &h);
        let l = l.unwrap();
        assert!(t.renamed("a", "amy", &plain("amy"), &h).is_none());
        assert_eq!(kinds(&h), Vec::<String>::new(), "no trace yet");
        t.talked(l, &h);
        assert_eq!(kinds(&h), vec!["join"]);
        t.talked(l, &h);
        t.closed(l, "eof", Instant::now(), &h);
        assert_eq!(kinds(&h), vec!["join", "leave"]);
        // One that never proves itself comes and goes unseen.
        let (l, _c, _r) = link_as(&mut t, Accepted, Some("b"), PeerKind::Go, &h);
        t.closed(l.unwrap(), "eof", Instant::now(), &h);
        assert_eq!(kinds(&h), vec!["join", "leave"]);
    }

    #[test]
    fn announces_from_one_address_fill_only_its_share() {
        let h = History::new(10);
        let mut t = Table::new("m".into());
        let now = Instant::now();
        let from = |ip: &str, n: usize| Sighting {
            peer_id: format!("p{ip}_{n}"),
            addr: format!("{ip}:9").parse().unwrap(),
            ..sighting("x", true)
        };
        for n in 0..1000 {
            t.heard(&from("10.0.0.9", n), now, &h);
        }
        assert_eq!(t.known(), MAX_UNLINKED_PER_ADDRESS);
        // Another address is heard all the same.
        assert!(t.heard(&from("10.0.0.1", 0), now, &h).0);
        // Many addresses together stay within the bound, and crowd out
        // themselves, not the lone peer at its own address that keeps
        // announcing.
        for n in 0..1000 {
            let later = now + Duration::from_millis(u64::try_from(n).unwrap());
            t.heard(&from(&format!("10.1.{}.1", n % 200), n), later, &h);
            if n % 100 == 0 {
                t.heard(&from("10.0.0.1", 0), later, &h);
            }
        }
        assert_eq!(t.known(), MAX_UNLINKED);
        assert!(t.peers.contains_key("p10.0.0.1_0"), "the lone peer stays");
        t.expire(now + Duration::from_secs(31), Duration::from_secs(30));
        assert_eq!(t.known(), 0);
        assert!(t.peers.capacity() < 64, "memory given back");
    }
}
