//! Does the host trust CAs that build containers would not? On a network
//! that intercepts TLS (a corporate proxy) the host's bundle has the
//! proxy's CA and Debian's stock one, which runtime images carry, does not:
//! networked build steps then fail to verify package registries unless
//! `[build] ca_bundle` gives them the host's.

use std::collections::HashSet;
use std::path::Path;

use launchway_build::trust::{CaSource, certificate_bodies};

use super::Check;

const NAME: &str = "build CAs";
/// Where Debian keeps the certificates its stock bundle is made of.
const STOCK_DIR: &str = "/usr/share/ca-certificates";
/// Where an operator adds CAs on a Debian host.
const LOCAL_DIR: &str = "/usr/local/share/ca-certificates";

/// The PEM texts of the `.crt` files under `dir`, and their file names.
fn pem_files(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "crt" || e == "pem")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                found.push((name, text));
            }
        }
    }
    found.sort();
    found
}

pub(super) fn build_cas(ca_bundle: &str, source: &str) -> Check {
    let Some(host_bundle) = CaSource::System.file() else {
        return Check::skip(NAME, "no system CA bundle found on this host");
    };
    let Ok(host) = std::fs::read_to_string(&host_bundle) else {
        return Check::skip(NAME, format!("{} cannot be read", host_bundle.display()));
    };
    let stock = pem_files(Path::new(STOCK_DIR));
    if stock.is_empty() {
        return Check::skip(
            NAME,
            format!("{STOCK_DIR} is missing: not a Debian host, cannot tell which CAs are local"),
        );
    }
    let configured = CaSource::parse(ca_bundle)
        .ok()
        .and_then(|source| source.file())
        .map(|file| {
            (
                file.clone(),
                std::fs::read_to_string(&file).unwrap_or_default(),
            )
        });
    verdict(
        &host_bundle.display().to_string(),
        &host,
        &stock
            .iter()
            .map(|(_, pem)| pem.as_str())
            .collect::<Vec<_>>(),
        &pem_files(Path::new(LOCAL_DIR)),
        configured
            .as_ref()
            .map(|(f, pem)| (f.display().to_string(), pem.as_str())),
        source,
    )
}

/// The check, from the host's bundle, Debian's stock certificates, the
/// operator's local ones (by name, for the message) and the configured
/// bundle.
fn verdict(
    host_name: &str,
    host: &str,
    stock: &[&str],
    local: &[(String, String)],
    configured: Option<(String, &str)>,
    source: &str,
) -> Check {
    let stock: HashSet<String> = stock
        .iter()
        .flat_map(|pem| certificate_bodies(pem))
        .collect();
    let extra: Vec<String> = certificate_bodies(host)
        .into_iter()
        .filter(|body| !stock.contains(body))
        .collect();
    if extra.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "{host_name} trusts no CA beyond Debian's stock bundle, which build containers have"
            ),
        );
    }
    let names: Vec<&str> = local
        .iter()
        .filter(|(_, pem)| certificate_bodies(pem).iter().any(|b| extra.contains(b)))
        .map(|(name, _)| name.as_str())
        .collect();
    let what = if names.is_empty() {
        format!("{} CA(s) that Debian's stock bundle lacks", extra.len())
    } else {
        format!(
            "{} CA(s) that Debian's stock bundle lacks ({})",
            extra.len(),
            names.join(", ")
        )
    };
    match configured {
        Some((file, pem)) => {
            let given: HashSet<String> = certificate_bodies(pem).into_iter().collect();
            let missing = extra.iter().filter(|b| !given.contains(*b)).count();
            if missing == 0 {
                Check::ok(
                    NAME,
                    format!(
                        "{host_name} trusts {what}; networked build steps get them from {file} (`[build] ca_bundle`)"
                    ),
                )
            } else {
                Check::warn(
                    NAME,
                    format!(
                        "{host_name} trusts {what}; {missing} of them are not in {file}, the bundle networked build steps get"
                    ),
                    format!(
                        "set [build] ca_bundle = \"system\" in {source}, or add them to {file}"
                    ),
                )
            }
        }
        None => Check::warn(
            NAME,
            format!(
                "{host_name} trusts {what}, which build containers would not: with a TLS-intercepting proxy, pip, npm and composer fail in builds"
            ),
            format!("set [build] ca_bundle = \"system\" in {source}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn pem(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn local_cas_are_found_and_the_setting_decides() {
        let stock = [pem("STOCK1"), pem("STOCK2")];
        let stock: Vec<&str> = stock.iter().map(String::as_str).collect();
        let host = format!("{}{}{}", pem("STOCK1"), pem("STOCK2"), pem("PROXY"));
        let local = vec![("proxy.crt".to_owned(), pem("PROXY"))];

        let plain = verdict(
            "h",
            &format!("{}{}", pem("STOCK1"), pem("STOCK2")),
            &stock,
            &local,
            None,
            "s",
        );
        assert_eq!(plain.verdict, Verdict::Ok, "{plain:?}");

        let off = verdict("h", &host, &stock, &local, None, "s");
        assert_eq!(off.verdict, Verdict::Warn);
        assert!(
            off.detail.contains("1 CA(s)") && off.detail.contains("proxy.crt"),
            "{off:?}"
        );
        assert!(
            off.fix
                .as_deref()
                .unwrap_or_default()
                .contains("[build] ca_bundle = \"system\""),
            "{off:?}"
        );

        let given = verdict(
            "h",
            &host,
            &stock,
            &local,
            Some(("b".into(), host.as_str())),
            "s",
        );
        assert_eq!(given.verdict, Verdict::Ok, "{given:?}");

        let stale = verdict(
            "h",
            &host,
            &stock,
            &local,
            Some(("b".into(), stock[0])),
            "s",
        );
        assert_eq!(stale.verdict, Verdict::Warn, "{stale:?}");
        assert!(stale.detail.contains("1 of them are not in b"), "{stale:?}");
    }
}
