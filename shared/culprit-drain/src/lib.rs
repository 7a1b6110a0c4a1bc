//! Mines log templates online, Drain-style.
//!
//! Each line is split on whitespace and its variable tokens (numbers, hex ids, UUIDs, IP
//! addresses, paths with digits, numeric `key=value` values, block ids, ...) are masked to `<*>`.
//! The masked tokens then descend a fixed-depth prefix tree, keyed first by token count and then
//! by the leading tokens, to a leaf holding a few candidate clusters; the line joins the most
//! similar one if it is similar enough, turning the positions where they differ into `<*>`, or
//! else starts a new cluster. This is the algorithm of He et al., "Drain: An Online Log Parsing
//! Approach with Fixed Depth Tree" (ICWS 2017), with memory capped by evicting the least
//! recently used cluster.
//!
//! ```
//! use culprit_drain::{DrainConfig, TemplateMiner};
//!
//! let mut miner = TemplateMiner::new(DrainConfig::default());
//! let first = miner.add("Connection from 10.0.0.1 closed after 31 ms");
//! let second = miner.add("Connection from 10.0.0.7 closed after 4 ms");
//! assert_eq!(first.id, second.id);
//! assert_eq!(miner.template(first.id).as_deref(), Some("Connection from <*> closed after <*> ms"));
//! ```
#![forbid(unsafe_code)]

mod events;
mod mask;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

pub use events::{
    level_word, line_level, mining_line, strip_leading_timestamps, LogTemplates, LogTemplatesState,
};
pub use mask::WILDCARD;

thread_local! {
    static LINES_MINED: Cell<u64> = const { Cell::new(0) };
}

/// Lines every miner on this thread has learned from ([`TemplateMiner::add`]) since the thread
/// started: lets a test check that a pipeline mines each log line once.
pub fn lines_mined_on_this_thread() -> u64 {
    LINES_MINED.with(Cell::get)
}

/// Identifies a cluster for the life of the miner, however its template generalises.
pub type TemplateId = u32;

/// Tuning of the prefix tree and of cluster matching.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DrainConfig {
    /// Depth of the prefix tree counting the root and the token-count layer, so `depth - 2`
    /// leading tokens route a line to its leaf.
    pub depth: usize,
    /// Fraction of positions a line must share with a template to join its cluster.
    pub similarity_threshold: f64,
    /// Children per tree node before further distinct tokens share a `<*>` child.
    pub max_children: usize,
    /// Clusters kept at most; beyond this the least recently used one is forgotten.
    pub max_clusters: usize,
}

impl Default for DrainConfig {
    /// Depth 4 and 100 children as in the paper. The threshold was measured on loghub-2k
    /// (HDFS, BGL, OpenStack): 0.4 to 0.5 score alike; above 0.5 two-token lines such as
    /// `fpr29=<*> value` stop merging, below 0.4 unrelated OpenStack lines merge. 0.45 is mid-plateau.
    fn default() -> Self {
        Self {
            depth: 4,
            similarity_threshold: 0.45,
            max_children: 100,
            max_clusters: 10_000,
        }
    }
}

/// What [`TemplateMiner::add`] did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The cluster the line now belongs to.
    pub id: TemplateId,
    /// The line started a new cluster.
    pub is_new: bool,
    /// The line joined an existing cluster and made its template more general.
    pub template_changed: bool,
    /// Number of `<*>` slots in the cluster's template after learning the line.
    pub param_count: usize,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Cluster {
    template: Vec<Box<str>>,
    size: u64,
    /// Tree node whose candidate list holds this cluster, to unlink it on eviction.
    leaf: usize,
    /// Clock reading of the last line that joined, the key of this cluster in `recency`.
    last_used: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Node {
    children: HashMap<Box<str>, usize>,
    clusters: Vec<TemplateId>,
}

/// An online Drain template miner. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TemplateMiner {
    config: DrainConfig,
    /// Arena of tree nodes; indices are stable because nodes are never removed.
    nodes: Vec<Node>,
    /// First tree layer: token count to node.
    by_token_count: HashMap<usize, usize>,
    clusters: HashMap<TemplateId, Cluster>,
    /// Last-use clock reading to cluster, oldest first: the eviction order.
    recency: BTreeMap<u64, TemplateId>,
    clock: u64,
    next_id: TemplateId,
}

impl Default for TemplateMiner {
    fn default() -> Self {
        Self::new(DrainConfig::default())
    }
}

impl TemplateMiner {
    pub fn new(config: DrainConfig) -> Self {
        Self {
            config,
            nodes: Vec::new(),
            by_token_count: HashMap::new(),
            clusters: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            next_id: 1,
        }
    }

    pub fn config(&self) -> &DrainConfig {
        &self.config
    }

    /// Learns from the line: returns the matched or newly created cluster.
    pub fn add(&mut self, line: &str) -> Match {
        LINES_MINED.with(|n| n.set(n.get() + 1));
        let tokens = mask::tokenize(line);
        self.clock += 1;
        if let Some(id) = self.best_match(&tokens) {
            if let Some(cluster) = self.clusters.get_mut(&id) {
                let template_changed = generalise(&mut cluster.template, &tokens);
                cluster.size += 1;
                self.recency.remove(&cluster.last_used);
                cluster.last_used = self.clock;
                self.recency.insert(self.clock, id);
                return Match {
                    id,
                    is_new: false,
                    template_changed,
                    param_count: count_params(&cluster.template),
                };
            }
        }
        self.create_cluster(&tokens)
    }

    /// Matches without learning (for scoring against a frozen baseline): the cluster `add`
    /// would put the line in, or `None` where `add` would start a new one.
    pub fn find(&self, line: &str) -> Option<TemplateId> {
        self.best_match(&mask::tokenize(line))
    }

    /// The cluster's template: tokens joined by single spaces, variables as `<*>`.
    pub fn template(&self, id: TemplateId) -> Option<String> {
        self.clusters.get(&id).map(|c| c.template.join(" "))
    }

    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// Lines the cluster has seen; 0 for an unknown or evicted id.
    pub fn size(&self, id: TemplateId) -> u64 {
        self.clusters.get(&id).map_or(0, |c| c.size)
    }

    /// All live clusters as `(id, template, size)`, in no particular order.
    pub fn clusters(&self) -> impl Iterator<Item = (TemplateId, String, u64)> + '_ {
        self.clusters
            .iter()
            .map(|(&id, c)| (id, c.template.join(" "), c.size))
    }

    /// Number of leading tokens that route a line through the tree.
    fn routing_depth(&self) -> usize {
        self.config.depth.saturating_sub(2)
    }

    /// The leaf a line's tokens lead to, preferring exact children over the `<*>` child.
    fn find_leaf(&self, tokens: &[Cow<'_, str>]) -> Option<usize> {
        let mut node = *self.by_token_count.get(&tokens.len())?;
        for token in tokens.iter().take(self.routing_depth()) {
            let children = &self.nodes[node].children;
            node = match children.get(token.as_ref()) {
                Some(&child) => child,
                None => *children.get(WILDCARD)?,
            };
        }
        Some(node)
    }

    /// The most similar cluster in the line's leaf, if similar enough; ties go to the more
    /// general template, as in the reference implementation.
    fn best_match(&self, tokens: &[Cow<'_, str>]) -> Option<TemplateId> {
        let leaf = self.find_leaf(tokens)?;
        let mut best: Option<(f64, usize, TemplateId)> = None;
        for &id in &self.nodes[leaf].clusters {
            let Some(cluster) = self.clusters.get(&id) else {
                continue;
            };
            let (similarity, params) = similarity(&cluster.template, tokens);
            let better = match best {
                None => true,
                Some((best_sim, best_params, _)) => {
                    similarity > best_sim || (similarity == best_sim && params > best_params)
                }
            };
            if better {
                best = Some((similarity, params, id));
            }
        }
        best.filter(|&(similarity, _, _)| similarity >= self.config.similarity_threshold)
            .map(|(_, _, id)| id)
    }

    fn create_cluster(&mut self, tokens: &[Cow<'_, str>]) -> Match {
        while self.clusters.len() >= self.config.max_clusters.max(1) {
            if !self.evict_least_recently_used() {
                break;
            }
        }
        let leaf = self.leaf_for_insert(tokens);
        let id = self.allocate_id();
        let template: Vec<Box<str>> = tokens.iter().map(|t| Box::from(t.as_ref())).collect();
        let param_count = count_params(&template);
        self.nodes[leaf].clusters.push(id);
        self.recency.insert(self.clock, id);
        self.clusters.insert(
            id,
            Cluster {
                template,
                size: 1,
                leaf,
                last_used: self.clock,
            },
        );
        Match {
            id,
            is_new: true,
            template_changed: false,
            param_count,
        }
    }

    /// Walks (and grows) the tree for a new cluster. Tokens holding digits go under `<*>` so
    /// that values the masks missed do not fan the tree out; once a node is nearly full, new
    /// tokens share its `<*>` child too.
    fn leaf_for_insert(&mut self, tokens: &[Cow<'_, str>]) -> usize {
        let mut node = match self.by_token_count.get(&tokens.len()) {
            Some(&node) => node,
            None => {
                let node = self.new_node();
                self.by_token_count.insert(tokens.len(), node);
                node
            }
        };
        let max_children = self.config.max_children;
        for token in tokens.iter().take(self.routing_depth()) {
            let token = token.as_ref();
            let children = &self.nodes[node].children;
            if let Some(&child) = children.get(token) {
                node = child;
                continue;
            }
            let has_wildcard_child = children.contains_key(WILDCARD);
            // Keep one slot free for the `<*>` child until it exists.
            let room_for_token = if has_wildcard_child {
                children.len() < max_children
            } else {
                children.len() + 1 < max_children
            };
            let is_variable =
                token.bytes().any(|b| b.is_ascii_digit()) && !mask::is_code_location(token);
            let key = if is_variable || !room_for_token {
                WILDCARD
            } else {
                token
            };
            node = match self.nodes[node].children.get(key) {
                Some(&child) => child,
                None => {
                    let child = self.new_node();
                    self.nodes[node].children.insert(Box::from(key), child);
                    child
                }
            };
        }
        node
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn evict_least_recently_used(&mut self) -> bool {
        let Some((_, id)) = self.recency.pop_first() else {
            return false;
        };
        if let Some(cluster) = self.clusters.remove(&id) {
            if let Some(leaf) = self.nodes.get_mut(cluster.leaf) {
                leaf.clusters.retain(|&c| c != id);
            }
        }
        true
    }

    /// Ids count up from 1; after wrapping past `u32::MAX` they skip ids still alive, so a live
    /// cluster's id is never reused (the cluster cap keeps free ids available).
    fn allocate_id(&mut self) -> TemplateId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.clusters.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Share of positions where the template holds exactly the line's token, and the number of
/// `<*>` slots in the template (the tie-breaker). A `<*>` slot matches only a masked token:
/// counting it against any token would let generalised templates swallow unrelated lines.
fn similarity(template: &[Box<str>], tokens: &[Cow<'_, str>]) -> (f64, usize) {
    if template.len() != tokens.len() {
        return (0.0, 0);
    }
    if template.is_empty() {
        return (1.0, 0);
    }
    let mut same = 0usize;
    let mut params = 0usize;
    for (t, token) in template.iter().zip(tokens) {
        // Different statements of the code are different templates, however alike their text.
        if t.as_ref() != token.as_ref()
            && mask::is_code_location(t)
            && mask::is_code_location(token)
        {
            return (0.0, 0);
        }
        if t.as_ref() == WILDCARD {
            params += 1;
        }
        if t.as_ref() == token.as_ref() {
            same += 1;
        }
    }
    (same as f64 / template.len() as f64, params)
}

/// Turns every position where the template and the line differ into `<*>`; reports a change.
fn generalise(template: &mut [Box<str>], tokens: &[Cow<'_, str>]) -> bool {
    let mut changed = false;
    for (t, token) in template.iter_mut().zip(tokens) {
        if t.as_ref() != token.as_ref() && t.as_ref() != WILDCARD {
            *t = Box::from(WILDCARD);
            changed = true;
        }
    }
    changed
}

fn count_params(template: &[Box<str>]) -> usize {
    template.iter().map(|t| t.matches(WILDCARD).count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner() -> TemplateMiner {
        TemplateMiner::new(DrainConfig::default())
    }

    #[test]
    fn miner_is_clone_send_and_sync() {
        fn assert_traits<T: Clone + Send + Sync>() {}
        assert_traits::<TemplateMiner>();
    }

    #[test]
    fn lines_differing_only_in_numbers_share_a_template() {
        let mut miner = miner();
        let a = miner.add("Received block blk_123 of size 67108864 from /10.250.19.102");
        let b = miner.add("Received block blk_-9876 of size 512 from /10.251.1.7");
        assert_eq!(a.id, b.id);
        assert!(a.is_new && !b.is_new);
        assert!(
            !b.template_changed,
            "masking alone should make the lines identical"
        );
        assert_eq!(b.param_count, 3);
        assert_eq!(miner.size(a.id), 2);
        assert_eq!(
            miner.template(a.id).as_deref(),
            Some("Received block <*> of size <*> from <*>")
        );
    }

    #[test]
    fn lines_with_different_token_counts_never_merge() {
        let mut miner = TemplateMiner::new(DrainConfig {
            similarity_threshold: 0.0,
            ..DrainConfig::default()
        });
        let short = miner.add("worker started");
        let long = miner.add("worker started again");
        assert_ne!(short.id, long.id);
        assert_eq!(miner.cluster_count(), 2);
    }

    #[test]
    fn a_cluster_keeps_its_id_when_its_template_generalises() {
        let mut miner = miner();
        let first = miner.add("user alice logged in from web");
        let second = miner.add("user alice logged in from mobile");
        assert_eq!(first.id, second.id);
        assert!(second.template_changed);
        assert_eq!(second.param_count, 1);
        assert_eq!(
            miner.template(first.id).as_deref(),
            Some("user alice logged in from <*>")
        );
        let third = miner.add("user alice logged in from tablet");
        assert_eq!(third.id, first.id);
        assert!(!third.template_changed);
    }

    #[test]
    fn lines_from_different_code_locations_never_merge() {
        let mut miner = miner();
        let a = miner.add(
            "INFO t.s.TravelServiceImpl#366 [getTickets][Calculate distance][calculate time 0]",
        );
        let b = miner.add(
            "INFO t.s.TravelServiceImpl#372 [getTickets][Calculate distance][calculate time 175]",
        );
        let c = miner.add(
            "INFO t.s.TravelServiceImpl#372 [getTickets][Calculate distance][calculate time 9]",
        );
        assert_ne!(a.id, b.id);
        assert_eq!(b.id, c.id);
        assert_eq!(miner.template(a.id).as_deref(), Some("INFO t.s.TravelServiceImpl#366 [getTickets][Calculate distance][calculate time <*>]"));
    }

    #[test]
    fn dissimilar_lines_of_the_same_length_start_separate_clusters() {
        let mut miner = miner();
        let a = miner.add("disk full on volume data");
        let b = miner.add("disk quota exceeded for user bob");
        let c = miner.add("disk check passed nothing to do");
        assert_ne!(b.id, c.id);
        assert_ne!(a.id, b.id);
        assert_eq!(miner.cluster_count(), 3);
    }

    #[test]
    fn find_matches_without_learning() {
        let mut miner = miner();
        let id = miner.add("connection to 10.0.0.1 closed").id;
        assert_eq!(miner.find("connection to 10.0.0.9 closed"), Some(id));
        assert_eq!(miner.find("connection to 10.0.0.9 reset"), Some(id));
        assert_eq!(miner.find("something else entirely"), None);
        assert_eq!(miner.size(id), 1);
        assert_eq!(miner.cluster_count(), 1);
        assert_eq!(
            miner.template(id).as_deref(),
            Some("connection to <*> closed")
        );
    }

    #[test]
    fn find_agrees_with_what_add_would_do() {
        let mut miner = miner();
        for line in [
            "job 1 done",
            "job 2 done",
            "cache miss key foo",
            "cache hit key bar",
        ] {
            let predicted = miner.find(line);
            let added = miner.add(line);
            assert_eq!(predicted, (!added.is_new).then_some(added.id), "{line}");
        }
    }

    #[test]
    fn cluster_cap_evicts_the_least_recently_used() {
        let mut miner = TemplateMiner::new(DrainConfig {
            max_clusters: 2,
            ..DrainConfig::default()
        });
        let a = miner.add("alpha one").id;
        let b = miner.add("beta two three").id;
        miner.add("alpha one"); // a is now more recent than b
        let c = miner.add("gamma four five six").id;
        assert_eq!(miner.cluster_count(), 2);
        assert_eq!(miner.template(b), None);
        assert_eq!(miner.size(b), 0);
        assert_eq!(miner.find("beta two three"), None);
        assert_eq!(miner.size(a), 2);
        assert!(miner.template(c).is_some());
        let b_again = miner.add("beta two three");
        assert!(b_again.is_new);
        assert_ne!(b_again.id, b, "evicted ids are not handed out again");
        assert_eq!(miner.cluster_count(), 2);
    }

    #[test]
    fn cluster_count_never_exceeds_the_cap() {
        let mut miner = TemplateMiner::new(DrainConfig {
            max_clusters: 50,
            ..DrainConfig::default()
        });
        for i in 0..1_000 {
            // Distinct words in every position, so every line starts a cluster.
            let line = format!(
                "w{} x{} y{}",
                to_letters(i),
                to_letters(i + 1),
                to_letters(i + 2)
            );
            miner.add(&line);
            assert!(miner.cluster_count() <= 50);
        }
        assert_eq!(miner.cluster_count(), 50);
    }

    #[test]
    fn full_tree_nodes_route_new_tokens_through_the_wildcard_child() {
        let mut miner = TemplateMiner::new(DrainConfig {
            max_children: 2,
            ..DrainConfig::default()
        });
        let words = ["apple", "banana", "cherry", "damson", "elder"];
        let ids: Vec<_> = words
            .iter()
            .map(|w| miner.add(&format!("{w} is ripe today")).id)
            .collect();
        // Only one named child fits; the rest share the `<*>` child and merge there.
        assert_eq!(miner.find("apple is ripe today"), Some(ids[0]));
        assert_eq!(ids[2], ids[1]);
        assert_eq!(ids[4], ids[1]);
    }

    #[test]
    fn empty_and_whitespace_lines_share_one_empty_template() {
        let mut miner = miner();
        let a = miner.add("");
        let b = miner.add(" \t \n ");
        assert_eq!(a.id, b.id);
        assert_eq!(miner.template(a.id).as_deref(), Some(""));
        assert_eq!(a.param_count, 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut miner = miner();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for len in 0..2_000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let line = String::from_utf8_lossy(&bytes);
            let m = miner.add(&line);
            assert!(miner.template(m.id).is_some());
            assert_eq!(miner.find(&line), Some(m.id));
        }
    }

    #[test]
    fn very_long_lines_and_tokens_are_handled() {
        let mut miner = miner();
        let many_tokens = "x=1 y ".repeat(100_000);
        let one_token = "a=1:".repeat(100_000);
        let m1 = miner.add(&many_tokens);
        let m2 = miner.add(&one_token);
        assert_eq!(m1.param_count, 100_000);
        assert_eq!(m2.param_count, 100_000);
        assert_eq!(miner.find(&many_tokens), Some(m1.id));
    }

    #[test]
    fn degenerate_configs_do_not_panic() {
        for config in [
            DrainConfig {
                depth: 0,
                max_children: 0,
                max_clusters: 0,
                similarity_threshold: f64::NAN,
            },
            DrainConfig {
                depth: 1_000,
                max_children: 1,
                max_clusters: 1,
                similarity_threshold: 2.0,
            },
        ] {
            let mut miner = TemplateMiner::new(config);
            for line in ["a b c", "a b d", "", "1 2 3"] {
                let m = miner.add(line);
                assert!(
                    miner.template(m.id).is_some(),
                    "the line's own cluster is kept"
                );
            }
            assert!(miner.cluster_count() >= 1);
        }
    }

    /// Spells `n` in letters so that masking (which looks for digits) leaves it alone.
    fn to_letters(mut n: usize) -> String {
        let mut s = String::new();
        loop {
            s.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
            if n == 0 {
                return s;
            }
        }
    }
}
