//! `ipfs-kit-p2p index ...`: the cluster's indexes through a running node.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Each index's size on this node, and how far it is in sync
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Embeddings: collections of vectors with top-k search
    #[command(subcommand)]
    Vectors(VectorsCommand),
    /// Knowledge graph: triples, pattern queries, neighbourhoods
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Content metadata: a JSON document per CID
    #[command(subcommand)]
    Meta(MetaCommand),
    /// Named lists of peers (a pin may name one: `pin add --peers LIST`)
    #[command(subcommand)]
    Peers(PeersListCommand),
}

#[derive(Debug, Clone, Args)]
pub struct JsonFlag {
    /// Print the control API's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Paging {
    /// Start after this cursor (the `next` of the previous page)
    #[arg(long)]
    pub after: Option<String>,
    /// Results per page
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum VectorsCommand {
    /// Create a collection (dimension and metric are fixed for its life)
    Create {
        name: String,
        #[arg(long)]
        dim: u32,
        /// cosine | dot | l2
        #[arg(long, default_value = "cosine")]
        metric: String,
    },
    /// List the collections
    Ls(JsonFlag),
    /// One collection's size and approximate index
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a collection and every item in it
    Drop {
        name: String,
    },
    /// Upsert one item: a JSON array of numbers, optional JSON metadata
    Put {
        collection: String,
        key: String,
        /// e.g. '[0.1, 0.2, 0.3]'
        #[arg(long)]
        vector: String,
        /// e.g. '{"lang": "en"}'
        #[arg(long)]
        meta: Option<String>,
    },
    Get {
        collection: String,
        key: String,
    },
    Rm {
        collection: String,
        key: String,
    },
    /// The k nearest items to a vector
    Search {
        collection: String,
        #[arg(long)]
        vector: String,
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Metadata fields the hits must have, e.g. '{"lang": "en"}'
        #[arg(long)]
        filter: Option<String>,
        /// auto | exact | approximate
        #[arg(long, default_value = "auto")]
        mode: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Upsert items from JSON Lines ({"key","vector","meta"}); FILE or - for stdin
    Import {
        collection: String,
        file: PathBuf,
    },
    /// Every item as JSON Lines on stdout
    Export {
        collection: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct TripleArgs {
    /// Subject: an IRI or a CID
    pub s: String,
    /// Predicate: an IRI
    pub p: String,
    /// Object: an IRI or a CID, or a literal with --literal
    pub o: String,
    /// The object is a literal
    #[arg(long)]
    pub literal: bool,
    /// The literal's datatype IRI
    #[arg(long, requires = "literal")]
    pub datatype: Option<String>,
    /// The literal's language tag
    #[arg(long, requires = "literal")]
    pub lang: Option<String>,
    /// A named graph (an IRI); the default graph without it
    #[arg(long)]
    pub graph: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PatternArgs {
    #[arg(long)]
    pub s: Option<String>,
    #[arg(long)]
    pub p: Option<String>,
    #[arg(long)]
    pub o: Option<String>,
    /// The object given is a literal
    #[arg(long)]
    pub literal: bool,
    /// Only this named graph
    #[arg(long)]
    pub graph: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    Add(TripleArgs),
    Rm(TripleArgs),
    /// Triples matching a pattern (any of --s --p --o left open)
    Query {
        #[command(flatten)]
        pattern: PatternArgs,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// How many triples match a pattern
    Count {
        #[command(flatten)]
        pattern: PatternArgs,
    },
    /// A node's neighbourhood up to --depth hops, both directions
    Neighbours {
        node: String,
        #[arg(long, default_value_t = 1)]
        depth: u32,
        /// Follow only these predicates (repeatable)
        #[arg(long = "predicate")]
        predicates: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    Stats,
    /// Add triples from JSON Lines ({"s","p","o","graph"}); FILE or -
    Import {
        file: PathBuf,
    },
    Export,
}

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Replace a CID's document with a JSON object
    Put {
        cid: String,
        doc: String,
    },
    /// Merge fields into it (null removes a field)
    Merge {
        cid: String,
        doc: String,
    },
    Get {
        cid: String,
    },
    Rm {
        cid: String,
    },
    /// Documents by field value, tag or name prefix (a listing without one)
    Find {
        #[arg(long, requires = "value")]
        field: Option<String>,
        /// JSON text or a bare word
        #[arg(long, requires = "field")]
        value: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        name_prefix: Option<String>,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Replace documents from JSON Lines ({"cid","doc"}); FILE or -
    Import {
        file: PathBuf,
    },
    Export,
}

#[derive(Debug, Subcommand)]
pub enum PeersListCommand {
    Ls(JsonFlag),
    Show {
        list: String,
    },
    /// Make the list exactly these peers
    Set {
        list: String,
        peers: Vec<String>,
    },
    Add {
        list: String,
        peer: String,
    },
    /// Remove one peer, or the whole list without PEER
    Rm {
        list: String,
        peer: Option<String>,
    },
}
