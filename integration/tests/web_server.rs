//! The web server inside app containers, end to end on the real stack:
//! Debian's nginx and PHP-FPM in the catalog's runtime images, apps in
//! Upsun's layouts (a PHP front controller, static locations with
//! `expires`, `headers` and `rules`, a static-only site, a Python app
//! behind `passthru`), reached through the router.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_integration::{Daemon, HttpResponse, http_fetch};

const HOST: &str = "main.shop.localhost";

fn fetch(daemon: &Daemon, path: &str) -> HttpResponse {
    http_fetch(daemon.router_addr(), HOST, path).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PHP_APP: &str = r#"routes:
  "http://{default}/": {type: upstream, upstream: "app:http"}
applications:
  app:
    type: "php:8.2"
    build:
      flavor: none
    runtime:
      extensions:
        - redis
        - pdo_pgsql
        - name: opcache
          configuration:
            validate_timestamps: 0
            opcache.max_wasted_percentage: 7
      disabled_extensions: [redis]
    variables:
      php:
        memory_limit: "321M"
        max_input_vars: 4321
    web:
      locations:
        "/":
          root: "web"
          passthru: "/index.php"
          index: [index.php]
        "/assets":
          root: "web/assets"
          expires: 1h
          passthru: false
          headers:
            X-Asset: "costs $5"
          rules:
            '\.txt$':
              expires: 2d
              headers:
                X-Rule: "text"
        "/private":
          root: "private"
          allow: false
          passthru: false
"#;

#[test]
fn php_front_controller_static_locations_and_rules() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", PHP_APP);
    work.write(
        "web/index.php",
        "<?php\nheader('Content-Type: text/plain');\necho 'front ', $_SERVER['REQUEST_URI'], ' ', getenv('PLATFORM_APPLICATION_NAME'), ' ', PHP_MAJOR_VERSION, '.', PHP_MINOR_VERSION, \"\\n\";\necho implode(',', array_filter(['pdo_pgsql', 'pdo_mysql', 'redis', 'gd', 'intl', 'Zend OPcache', 'sodium'], 'extension_loaded')), \"\\n\";\necho 'ini ', ini_get('memory_limit'), ' ', ini_get('max_input_vars'), ' ', ini_get('opcache.validate_timestamps'), ' ', ini_get('opcache.max_wasted_percentage'), \"\\n\";\n",
    );
    work.write("web/hello.php", "<?php echo 'hello from a script';\n");
    work.write("web/assets/site.css", "body { color: red }\n");
    work.write("web/assets/readme.txt", "plain text\n");
    work.write("private/secret.txt", "secret\n");
    work.commit("php app");
    let log = work.push_ok("main", &[]);
    assert!(log.contains("Building application 'app'"), "{log}");

    let front = fetch(&daemon, "/");
    assert_eq!(front.status, 200, "{front:?}\n{}", daemon.log());
    assert!(front.body.starts_with("front / app 8.2\n"), "{front:?}");
    assert!(
        front
            .body
            .contains("pdo_pgsql,pdo_mysql,gd,intl,Zend OPcache,sodium\n"),
        "{front:?}"
    );
    // The `php:` variables are php.ini settings.
    // So is the extensions' configuration.
    assert!(front.body.contains("\nini 321M 4321 0 7\n"), "{front:?}");
    let routed = fetch(&daemon, "/blog/post?id=7");
    assert_eq!(routed.status, 200, "{routed:?}");
    assert!(
        routed.body.starts_with("front /blog/post?id=7 app"),
        "{routed:?}"
    );
    let script = fetch(&daemon, "/hello.php");
    assert_eq!(
        (script.status, script.body.as_str()),
        (200, "hello from a script")
    );

    let css = fetch(&daemon, "/assets/site.css");
    assert_eq!(css.status, 200, "{css:?}");
    assert_eq!(css.body, "body { color: red }\n");
    assert_eq!(css.header("cache-control"), Some("max-age=3600"), "{css:?}");
    assert_eq!(css.header("x-asset"), Some("costs $5"), "{css:?}");
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let txt = fetch(&daemon, "/assets/readme.txt");
    assert_eq!(txt.status, 200, "{txt:?}");
    assert_eq!(
        txt.header("cache-control"),
        Some("max-age=172800"),
        "{txt:?}"
    );
    assert_eq!(txt.header("x-rule"), Some("text"), "{txt:?}");
    assert_eq!(fetch(&daemon, "/assets/missing.css").status, 404);
    assert_eq!(fetch(&daemon, "/private/secret.txt").status, 404);

    // A rule nginx cannot compile fails the deploy with nginx's word, and
    // the release before keeps serving.
    work.write(
        ".upsun/config.yaml",
        PHP_APP.replace(r"'\.txt$'", "'(unclosed'"),
    );
    work.commit("broken rule");
    let out = work.push("main", &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the web server of app 'app' (nginx) exited"),
        "{stderr}"
    );
    assert!(stderr.contains("pcre"), "nginx's own message: {stderr}");
    assert!(fetch(&daemon, "/").body.starts_with("front / app"));
}

#[test]
fn a_static_site_and_an_app_behind_passthru() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n");
    let work = daemon.admin_work("shop");
    work.write(
        ".upsun/config.yaml",
        r#"routes:
  "http://{default}/": {type: upstream, upstream: "site:http"}
  "http://api.{default}/": {type: upstream, upstream: "api:http"}
applications:
  site:
    type: "python:3.11"
    source:
      root: site
    hooks:
      build: |
        mkdir -p public/docs
        echo '<h1>static</h1>' > public/index.html
        echo 'docs' > public/docs/index.html
    web:
      locations:
        "/":
          root: "public"
          index: [index.html]
          expires: 5m
  api:
    type: "python:3.11"
    source:
      root: api
    web:
      commands:
        start: exec python3 -m http.server "$PORT" --bind 127.0.0.1 --directory /app/dynamic
      locations:
        "/":
          passthru: true
          allow: false
        "/static":
          root: "static"
          passthru: false
"#,
    );
    work.write("site/.keep", "");
    work.write("api/dynamic/hello", "from the app\n");
    work.write("api/static/logo.svg", "<svg/>\n");
    work.commit("static site and api");
    work.push_ok("main", &[]);

    let index = fetch(&daemon, "/");
    assert_eq!(index.status, 200, "{index:?}\n{}", daemon.log());
    assert_eq!(index.body, "<h1>static</h1>\n");
    assert_eq!(index.header("cache-control"), Some("max-age=300"));
    assert_eq!(fetch(&daemon, "/docs/").body, "docs\n");
    assert_eq!(fetch(&daemon, "/nothing-here").status, 404);

    let api_host = format!("api.{HOST}");
    let proxied = http_fetch(daemon.router_addr(), &api_host, "/hello").unwrap();
    assert_eq!(proxied.status, 200, "{proxied:?}");
    assert_eq!(proxied.body, "from the app\n");
    assert!(
        proxied
            .header("server")
            .unwrap_or("")
            .contains("SimpleHTTP"),
        "the app answered: {proxied:?}"
    );
    let logo = http_fetch(daemon.router_addr(), &api_host, "/static/logo.svg").unwrap();
    assert_eq!(logo.status, 200, "{logo:?}");
    assert_eq!(logo.body, "<svg/>\n");
    assert!(
        !logo.header("server").unwrap_or("").contains("SimpleHTTP"),
        "nginx served it: {logo:?}"
    );
}
