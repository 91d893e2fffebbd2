//! A PHP app's `runtime`: `extensions` and `disabled_extensions` checked
//! at push against the PHP extensions there are. A name PHP has no
//! extension of is an error (a typo); a real extension this host's images
//! lack (`xdebug`, `blackfire`, `newrelic`…) is a warning, and the app
//! runs without it.

use super::Normalizer;

/// What every PHP runtime image here has (Debian's packages, sodium and
/// json built in): these can be turned on and off.
pub(crate) const PHP_EXTENSIONS_HERE: &[&str] = &[
    "apcu",
    "bcmath",
    "calendar",
    "ctype",
    "curl",
    "dom",
    "exif",
    "ffi",
    "fileinfo",
    "ftp",
    "gd",
    "gettext",
    "iconv",
    "igbinary",
    "imagick",
    "intl",
    "json",
    "mbstring",
    "memcached",
    "msgpack",
    "mysqli",
    "mysqlnd",
    "opcache",
    "pdo",
    "pdo_mysql",
    "pdo_pgsql",
    "pdo_sqlite",
    "pgsql",
    "phar",
    "posix",
    "readline",
    "redis",
    "shmop",
    "simplexml",
    "sockets",
    "sodium",
    "sqlite3",
    "sysvmsg",
    "sysvsem",
    "sysvshm",
    "tokenizer",
    "xml",
    "xmlreader",
    "xmlwriter",
    "xsl",
    "zip",
];

/// PHP extensions that exist (Upsun offers them) but these images lack.
const PHP_EXTENSIONS_ELSEWHERE: &[&str] = &[
    "amqp",
    "apc",
    "apcu_bc",
    "applepay",
    "blackfire",
    "bz2",
    "datadog",
    "dba",
    "enchant",
    "event",
    "gearman",
    "geoip",
    "gmp",
    "gnupg",
    "http",
    "imap",
    "ioncube",
    "ldap",
    "mailparse",
    "memcache",
    "mongo",
    "mongodb",
    "mysql",
    "newrelic",
    "oauth",
    "odbc",
    "openswoole",
    "opentelemetry",
    "pdo_dblib",
    "pdo_firebird",
    "pdo_odbc",
    "pdo_sqlsrv",
    "pinba",
    "protobuf",
    "pspell",
    "pthreads",
    "raphf",
    "rdkafka",
    "recode",
    "relay",
    "snmp",
    "soap",
    "sourceguardian",
    "spplus",
    "sqlsrv",
    "ssh2",
    "swoole",
    "sybase",
    "tidy",
    "tideways",
    "tideways_xhprof",
    "uploadprogress",
    "uuid",
    "xcache",
    "xdebug",
    "xhprof",
    "xmlrpc",
    "yaml",
    "zbarcode",
    "zendopcache",
];

/// The names a `runtime` list holds: strings, or `{name: …}` entries.
fn names(list: Option<&serde_json::Value>) -> Vec<(usize, String)> {
    list.and_then(|l| l.as_array())
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| match item {
                    serde_json::Value::String(name) => Some((index, name.clone())),
                    serde_json::Value::Object(entry) => entry
                        .get("name")
                        .and_then(|n| n.as_str())
                        .map(|name| (index, name.to_owned())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The php.ini settings of `runtime.extensions` entries written as
/// `{name, configuration: {key: value}}`: `name.key = value` (a dotted
/// key as it is), for the extensions this host has.
pub(crate) fn extension_settings(
    runtime: Option<&serde_json::Value>,
) -> std::collections::BTreeMap<String, String> {
    let mut settings = std::collections::BTreeMap::new();
    let entries = runtime
        .and_then(|r| r.get("extensions"))
        .and_then(|l| l.as_array());
    for entry in entries.into_iter().flatten() {
        let (Some(name), Some(configuration)) = (
            entry.get("name").and_then(|n| n.as_str()),
            entry.get("configuration").and_then(|c| c.as_object()),
        ) else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        if !PHP_EXTENSIONS_HERE.contains(&name.as_str()) {
            continue;
        }
        for (key, value) in configuration {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Bool(true) => "On".to_owned(),
                serde_json::Value::Bool(false) => "Off".to_owned(),
                serde_json::Value::Number(number) => number.to_string(),
                _ => continue,
            };
            // `server_id` of blackfire is `blackfire.server_id`; a key
            // that has its own prefix (`apc.shm_size` of apcu) stays.
            let directive = if key.contains('.') {
                key.clone()
            } else {
                format!("{name}.{key}")
            };
            settings.insert(directive, value);
        }
    }
    settings
}

/// The extensions a PHP app's `runtime` turns off (those this host has).
pub(crate) fn disabled_extensions(runtime: Option<&serde_json::Value>) -> Vec<String> {
    names(runtime.and_then(|r| r.get("disabled_extensions")))
        .into_iter()
        .map(|(_, name)| name.to_ascii_lowercase())
        .filter(|name| PHP_EXTENSIONS_HERE.contains(&name.as_str()))
        .collect()
}

/// The smallest values Upsun takes for `sizing_hints`.
const MIN_REQUEST_MEMORY_MIB: u64 = 10;
const MIN_RESERVED_MEMORY_MIB: u64 = 70;

impl Normalizer<'_> {
    /// `runtime.sizing_hints` of a PHP app: each a whole number of MiB at
    /// least Upsun's minimum (an error at its place otherwise).
    pub(super) fn php_sizing(
        &mut self,
        name: &str,
        runtime: Option<&serde_json::Value>,
    ) -> Option<crate::config::PhpSizing> {
        let hints = runtime.and_then(|r| r.get("sizing_hints"))?;
        let mut sizing = crate::config::PhpSizing::default();
        let Some(object) = hints.as_object() else {
            let span = self.value_span(&["applications", name, "runtime", "sizing_hints"]);
            self.diags.error(
                span,
                "`sizing_hints` is a map: `request_memory` and `reserved_memory`, in MB",
            );
            return None;
        };
        for (key, value) in object {
            let (target, minimum) = match key.as_str() {
                "request_memory" => (&mut sizing.request_memory_mib, MIN_REQUEST_MEMORY_MIB),
                "reserved_memory" => (&mut sizing.reserved_memory_mib, MIN_RESERVED_MEMORY_MIB),
                _ => {
                    let span =
                        self.key_span(&["applications", name, "runtime", "sizing_hints", key]);
                    self.diags
                        .error(span, format!("`{key}` is not a sizing hint"))
                        .hint = Some("the hints are `request_memory` and `reserved_memory`".into());
                    continue;
                }
            };
            match value.as_u64().filter(|v| *v >= minimum) {
                Some(mib) => *target = mib,
                None => {
                    let span =
                        self.value_span(&["applications", name, "runtime", "sizing_hints", key]);
                    self.diags.error(
                        span,
                        format!("`{key}` is a whole number of MB, at least {minimum}"),
                    );
                }
            }
        }
        Some(sizing)
    }

    /// Checks the extension names of a PHP app's `runtime`.
    pub(super) fn check_php_runtime(&mut self, name: &str, runtime: Option<&serde_json::Value>) {
        for key in ["extensions", "disabled_extensions"] {
            for (index, extension) in names(runtime.and_then(|r| r.get(key))) {
                let lower = extension.to_ascii_lowercase();
                let index = index.to_string();
                let path = ["applications", name, "runtime", key, index.as_str()];
                let span = self
                    .value_span(&path)
                    .or_else(|| self.key_span(&["applications", name, "runtime", key]));
                if PHP_EXTENSIONS_HERE.contains(&lower.as_str()) {
                    continue;
                }
                if PHP_EXTENSIONS_ELSEWHERE.contains(&lower.as_str()) {
                    self.diags.warning(
                        span,
                        format!("PHP extension `{extension}` is not available on this host; the app runs without it"),
                    );
                    continue;
                }
                let suggestion = PHP_EXTENSIONS_HERE
                    .iter()
                    .chain(PHP_EXTENSIONS_ELSEWHERE)
                    .min_by_key(|known| strsim::levenshtein(known, &lower))
                    .filter(|known| strsim::levenshtein(known, &lower) <= 2);
                let diagnostic = self
                    .diags
                    .error(span, format!("`{extension}` is not a PHP extension"));
                diagnostic.hint = Some(match suggestion {
                    Some(known) => format!("did you mean `{known}`?"),
                    None => format!("this host's PHP has: {}", PHP_EXTENSIONS_HERE.join(", ")),
                });
            }
        }
    }
}
