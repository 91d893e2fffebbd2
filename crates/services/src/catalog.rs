//! The service types this host can run, and the versions Debian ships.
//!
//! Debian has one major per suite (bookworm: PostgreSQL 15, MariaDB 10.11,
//! Redis 7.0; trixie: 17, 11.8, 8.0), so each type is offered from every
//! reachable suite that ships it. A config asks for a version real
//! projects chose years ago (`postgresql:12`, `mariadb:10.4`, `redis:5.0`);
//! [`resolve`] picks the nearest offer (the same major first, then the next
//! higher, then the highest there is) and says so, unless exact versions
//! are demanded. `mysql` is MariaDB on Upsun too; `oracle-mysql` has no
//! Debian package and runs MariaDB, with a warning. Types Debian does not
//! ship (opensearch, solr, mongodb, kafka, …) are refused with the list of
//! what runs here.

use std::cmp::Ordering;

/// One version of a type, from one Debian suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The version a config names (`15`, `10.11`, `7.0`).
    pub version: &'static str,
    /// The Debian suite it is built from.
    pub suite: &'static str,
    /// The packages of its image.
    pub packages: &'static [&'static str],
    /// Where its server programs are, when not on the usual `PATH`.
    pub bin_dir: Option<&'static str>,
}

/// A service type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// `postgresql`, `mariadb`, `redis`, …
    pub name: &'static str,
    /// Its default endpoint (what `service:` with no endpoint relates to).
    pub endpoint: &'static str,
    /// The `scheme` of its relationships.
    pub scheme: &'static str,
    /// The port it listens on (`<relationship>.internal:<port>`).
    pub port: u16,
    /// Whether its data outlives a restart (on the environment's volume).
    pub persistent: bool,
    /// The versions available, oldest first.
    pub offers: &'static [Offer],
}

const POSTGRESQL: Kind = Kind {
    name: "postgresql",
    endpoint: "postgresql",
    scheme: "pgsql",
    port: 5432,
    persistent: true,
    offers: &[
        Offer {
            version: "15",
            suite: "bookworm",
            packages: &["postgresql-15", "postgresql-client-15"],
            bin_dir: Some("/usr/lib/postgresql/15/bin"),
        },
        Offer {
            version: "17",
            suite: "trixie",
            packages: &["postgresql-17", "postgresql-client-17"],
            bin_dir: Some("/usr/lib/postgresql/17/bin"),
        },
    ],
};

const MARIADB: Kind = Kind {
    name: "mariadb",
    endpoint: "mysql",
    scheme: "mysql",
    port: 3306,
    persistent: true,
    offers: &[
        Offer {
            version: "10.11",
            suite: "bookworm",
            packages: &["mariadb-server", "mariadb-client"],
            bin_dir: None,
        },
        Offer {
            version: "11.8",
            suite: "trixie",
            packages: &["mariadb-server", "mariadb-client"],
            bin_dir: None,
        },
    ],
};

const REDIS_OFFERS: &[Offer] = &[
    Offer {
        version: "7.0",
        suite: "bookworm",
        packages: &["redis-server", "redis-tools"],
        bin_dir: None,
    },
    Offer {
        version: "8.0",
        suite: "trixie",
        packages: &["redis-server", "redis-tools"],
        bin_dir: None,
    },
];

/// Every type this host can run.
pub const KINDS: &[Kind] = &[
    POSTGRESQL,
    MARIADB,
    Kind {
        name: "redis",
        endpoint: "redis",
        scheme: "redis",
        port: 6379,
        persistent: false,
        offers: REDIS_OFFERS,
    },
    Kind {
        name: "redis-persistent",
        endpoint: "redis",
        scheme: "redis",
        port: 6379,
        persistent: true,
        offers: REDIS_OFFERS,
    },
    Kind {
        name: "memcached",
        endpoint: "memcached",
        scheme: "memcached",
        port: 11211,
        persistent: false,
        offers: &[Offer {
            version: "1.6",
            suite: "bookworm",
            packages: &["memcached"],
            bin_dir: None,
        }],
    },
    Kind {
        name: "rabbitmq",
        endpoint: "rabbitmq",
        scheme: "amqp",
        port: 5672,
        persistent: true,
        offers: &[
            Offer {
                version: "3.10",
                suite: "bookworm",
                packages: &["rabbitmq-server"],
                bin_dir: None,
            },
            Offer {
                version: "4.0",
                suite: "trixie",
                packages: &["rabbitmq-server"],
                bin_dir: None,
            },
        ],
    },
    Kind {
        name: "varnish",
        endpoint: "http",
        scheme: "http",
        port: 80,
        persistent: false,
        offers: &[
            Offer {
                version: "7.1",
                suite: "bookworm",
                packages: &["varnish", "varnish-modules"],
                bin_dir: None,
            },
            Offer {
                version: "7.7",
                suite: "trixie",
                packages: &["varnish", "varnish-modules"],
                bin_dir: None,
            },
        ],
    },
    Kind {
        name: "network-storage",
        endpoint: "",
        scheme: "",
        port: 0,
        persistent: true,
        // A directory the apps that name it share: no image, no process.
        offers: &[Offer {
            version: "*",
            suite: "",
            packages: &[],
            bin_dir: None,
        }],
    },
];

/// Types real configs use that this host cannot run (no Debian package).
pub const UNSUPPORTED: &[&str] = &[
    "chrome-headless",
    "clickhouse",
    "elasticsearch",
    "elasticsearch-enterprise",
    "gotenberg",
    "influxdb",
    "kafka",
    "mercure",
    "mongodb",
    "mongodb-enterprise",
    "opensearch",
    "solr",
    "valkey",
    "valkey-persistent",
    "vault-kms",
];

/// A `type:` resolved to what runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The type as written (`mysql:10.4`): `PLATFORM_RELATIONSHIPS` keeps it.
    pub written: String,
    /// What runs.
    pub kind: &'static Kind,
    /// Which version of it.
    pub offer: &'static Offer,
    /// Said in the push log when what runs is not what was asked.
    pub note: Option<String>,
}

impl Resolved {
    /// The image this service runs (`postgresql:15`); shared by types that
    /// run the same server (`redis` and `redis-persistent`).
    pub fn image_type(&self) -> String {
        let name = match self.kind.name {
            "redis-persistent" => "redis",
            name => name,
        };
        format!("{name}:{}", self.offer.version)
    }
}

/// Every service image this host can build (`postgresql:15`, …): one per
/// version of each type that runs, types sharing a server sharing it.
pub fn image_types() -> Vec<String> {
    let mut types: Vec<String> = KINDS
        .iter()
        .filter(|kind| crate::run::runs(kind))
        .flat_map(|kind| {
            kind.offers.iter().map(|offer| {
                Resolved {
                    written: String::new(),
                    kind,
                    offer,
                    note: None,
                }
                .image_type()
            })
        })
        .collect();
    types.sort();
    types.dedup();
    types
}

/// Why a `type:` cannot run here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not `name:version`.
    #[error("`{0}` is not a service type: write `name:version`, e.g. `postgresql:15`")]
    Malformed(String),
    /// A type Launchway cannot run (or does not know).
    #[error("service type `{name}` cannot run on this host; it runs: {available}")]
    Unsupported {
        /// The type's name.
        name: String,
        /// What runs here.
        available: String,
    },
    /// Exact versions are demanded and this one is not offered.
    #[error(
        "{written} is not available here (it offers {offered}); pick one of those, or allow the nearest version"
    )]
    NotExact {
        /// The type as written.
        written: String,
        /// The versions offered.
        offered: String,
    },
}

/// Every type and version this host runs, for messages and listings.
pub fn available() -> String {
    KINDS
        .iter()
        .map(|kind| {
            let versions: Vec<&str> = kind.offers.iter().map(|offer| offer.version).collect();
            format!("{} ({})", kind.name, versions.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The numeric parts of a version (`10.11` → [10, 11]); `None` when it is
/// not dotted numbers.
fn numbers(version: &str) -> Option<Vec<u64>> {
    version
        .split('.')
        .map(|part| part.parse().ok())
        .collect::<Option<Vec<u64>>>()
        .filter(|parts| !parts.is_empty())
}

fn compare(a: &[u64], b: &[u64]) -> Ordering {
    a.cmp(b)
}

/// The offer of `kind` nearest to `asked`: the same major (the highest
/// minor of it), else the next higher major, else the highest offered.
fn nearest(kind: &'static Kind, asked: &[u64]) -> &'static Offer {
    let offered: Vec<(&'static Offer, Vec<u64>)> = kind
        .offers
        .iter()
        .filter_map(|offer| numbers(offer.version).map(|n| (offer, n)))
        .collect();
    let major = asked.first().copied().unwrap_or(0);
    let same_major = offered
        .iter()
        .filter(|(_, n)| n.first() == Some(&major))
        .max_by(|a, b| compare(&a.1, &b.1));
    let higher = offered
        .iter()
        .filter(|(_, n)| n.first().is_some_and(|m| *m > major))
        .min_by(|a, b| compare(&a.1, &b.1));
    let highest = offered.iter().max_by(|a, b| compare(&a.1, &b.1));
    same_major
        .or(higher)
        .or(highest)
        .map_or(&kind.offers[0], |(offer, _)| offer)
}

/// What runs for `type_name` (`postgresql:12`). With `exact`, a version
/// that is not offered is an error instead of the nearest one.
pub fn resolve(type_name: &str, exact: bool) -> Result<Resolved, ResolveError> {
    let (name, version) = type_name
        .split_once(':')
        .filter(|(name, version)| !name.is_empty() && !version.is_empty())
        .ok_or_else(|| ResolveError::Malformed(type_name.to_owned()))?;
    let (kind_name, alias_note) = match name {
        "mysql" => ("mariadb", None),
        "oracle-mysql" => (
            "mariadb",
            Some(
                "oracle-mysql has no Debian package; running MariaDB, which speaks the same protocol",
            ),
        ),
        other => (other, None),
    };
    let Some(kind) = KINDS.iter().find(|kind| kind.name == kind_name) else {
        return Err(ResolveError::Unsupported {
            name: name.to_owned(),
            available: available(),
        });
    };
    if kind.name == "network-storage" {
        return Ok(Resolved {
            written: type_name.to_owned(),
            kind,
            offer: &kind.offers[0],
            note: None,
        });
    }
    let asked = numbers(version);
    let exact_offer = kind.offers.iter().find(|offer| {
        offer.version == version
            || asked
                .as_ref()
                .zip(numbers(offer.version))
                .is_some_and(|(asked, offered)| {
                    // `15` names 15.x; `7` names 7.0.
                    asked.len() == 1 && offered.first() == asked.first()
                })
    });
    let offered = || {
        kind.offers
            .iter()
            .map(|offer| format!("{}:{}", kind.name, offer.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if exact && (exact_offer.is_none() || alias_note.is_some()) {
        return Err(ResolveError::NotExact {
            written: type_name.to_owned(),
            offered: offered(),
        });
    }
    let offer = exact_offer.unwrap_or_else(|| nearest(kind, asked.as_deref().unwrap_or(&[])));
    let mut notes: Vec<String> = alias_note.map(str::to_owned).into_iter().collect();
    if exact_offer.is_none() {
        notes.push(format!(
            "{type_name} is not available here; running {}:{}",
            kind.name, offer.version
        ));
    }
    Ok(Resolved {
        written: type_name.to_owned(),
        kind,
        offer,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_types_are_those_that_run_one_per_server_and_version() {
        let types = image_types();
        for wanted in [
            "postgresql:15",
            "postgresql:17",
            "mariadb:10.11",
            "redis:7.0",
            "memcached:1.6",
            "rabbitmq:3.10",
            "varnish:7.1",
        ] {
            assert!(types.iter().any(|t| t == wanted), "{wanted} in {types:?}");
        }
        assert!(
            !types.iter().any(|t| t.starts_with("redis-persistent")),
            "{types:?}"
        );
        assert!(
            !types.iter().any(|t| t.starts_with("network-storage")),
            "{types:?}"
        );
    }

    fn runs(type_name: &str) -> (String, Option<String>) {
        let resolved = resolve(type_name, false).unwrap();
        (
            format!("{}:{}", resolved.kind.name, resolved.offer.version),
            resolved.note,
        )
    }

    #[test]
    fn offered_versions_run_as_asked() {
        assert_eq!(runs("postgresql:15"), ("postgresql:15".into(), None));
        assert_eq!(runs("postgresql:17"), ("postgresql:17".into(), None));
        assert_eq!(runs("mariadb:10.11"), ("mariadb:10.11".into(), None));
        assert_eq!(runs("mariadb:11.8"), ("mariadb:11.8".into(), None));
        assert_eq!(runs("redis:7.0"), ("redis:7.0".into(), None));
        assert_eq!(runs("redis:7"), ("redis:7.0".into(), None));
        assert_eq!(runs("mysql:10.11"), ("mariadb:10.11".into(), None));
        assert_eq!(
            resolve("redis-persistent:7.0", false).unwrap().image_type(),
            "redis:7.0"
        );
    }

    #[test]
    fn other_versions_run_the_nearest_and_say_so() {
        // Same major first.
        let (runs_as, note) = runs("mariadb:10.4");
        assert_eq!(runs_as, "mariadb:10.11");
        assert_eq!(
            note.as_deref(),
            Some("mariadb:10.4 is not available here; running mariadb:10.11")
        );
        // Then the next higher major.
        assert_eq!(runs("postgresql:12").0, "postgresql:15");
        assert_eq!(runs("postgresql:16").0, "postgresql:17");
        assert_eq!(runs("redis:5.0").0, "redis:7.0");
        assert_eq!(runs("mariadb:11.2").0, "mariadb:11.8");
        // Then the highest there is.
        assert_eq!(runs("postgresql:18").0, "postgresql:17");
        let (runs_as, note) = runs("oracle-mysql:8.0");
        assert_eq!(runs_as, "mariadb:10.11");
        assert!(note.unwrap().contains("running MariaDB"));
    }

    #[test]
    fn exact_versions_and_unknown_types_are_refused() {
        assert!(matches!(
            resolve("postgresql:12", true),
            Err(ResolveError::NotExact { .. })
        ));
        assert!(resolve("postgresql:15", true).is_ok());
        let error = resolve("opensearch:2", false).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("opensearch") && text.contains("postgresql (15, 17)"),
            "{text}"
        );
        for malformed in ["postgresql", ":15", "postgresql:"] {
            assert!(matches!(
                resolve(malformed, false),
                Err(ResolveError::Malformed(_))
            ));
        }
        for unsupported in UNSUPPORTED {
            assert!(resolve(&format!("{unsupported}:1"), false).is_err());
        }
    }
}
