//! The deploy kit (`Dockerfile`, `deploy/k8s`), checked as far as this machine can without a
//! container engine or a cluster:
//!
//! - both Kustomize overlays render with `kubectl kustomize` and pass the assertions of
//!   `deploy/check/manifests.py` (probes, grace period, replicas and strategy, secrets,
//!   non-root), and those assertions fail on manifests that make the classic mistakes;
//! - the runtime stage's file set — the binary, exactly the libraries `ldd` lists (with the
//!   dynamic loader), the CA bundle, an empty `/data` owned by the image's user, the
//!   Dockerfile's ENV — is enough to run `serve --simulate` under `chroot` as 65532:65532 up
//!   to its listening line, `/healthz` and `/readyz` (so the store is writable on `/data` and
//!   nothing else needs to be). It does not prove the image builds: no engine runs here.
//!
//! Neither test skips: without `kubectl`, `python3` with PyYAML, `ldd`, `chroot` or root,
//! they fail and say what is missing (`deploy/check/run.sh` runs the same checks plus
//! schema validation and the Dockerfile linter, installing what they need).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The python that runs the assertions: `DEPLOY_CHECK_PYTHON` (run.sh's venv) or `python3`.
fn python() -> String {
    std::env::var("DEPLOY_CHECK_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// `kubectl kustomize deploy/k8s/overlays/<overlay>`, failing loudly without kubectl.
fn render(overlay: &str) -> String {
    let dir = repo().join("deploy/k8s/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl is needed to render the Kustomize overlays ({e}); it is on this \
                 project's machine image (package kubectl): install it, never skip this test"
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `deploy/check/manifests.py <mode>` on `yaml`: whether it passed, and its output.
fn assertions(mode: &str, yaml: &str) -> (bool, String) {
    let script = repo().join("deploy/check/manifests.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} runs deploy/check/manifests.py ({e}): set DEPLOY_CHECK_PYTHON to a python3 \
                 with PyYAML",
                python()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("manifests: "),
        "manifests.py did not run its checks (PyYAML missing?):\n{text}"
    );
    (out.status.success(), text)
}

/// `yaml` with `from` replaced once (it must be there: the mutation must apply).
fn mutate(yaml: &str, from: &str, to: &str) -> String {
    assert!(yaml.contains(from), "the rendered manifests hold {from:?}");
    yaml.replacen(from, to, 1)
}

/// Asserts that the assertions reject `yaml` with a failure line containing `failing`.
fn rejected(mode: &str, yaml: &str, failing: &str) {
    let (passed, out) = assertions(mode, yaml);
    assert!(
        !passed,
        "{mode}: a manifest that breaks {failing:?} passed:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains(failing)),
        "{mode}: expected a failure about {failing:?}:\n{out}"
    );
}

#[test]
fn both_overlays_render_and_pass_the_deploy_assertions() {
    for overlay in ["sqlite", "postgres"] {
        let (passed, out) = assertions(overlay, &render(overlay));
        assert!(passed, "deploy/k8s/overlays/{overlay}:\n{out}");
        assert!(out.contains(" 0 failed"), "{out}");
    }
}

/// The assertions catch the mistakes they are there for: each mutation of a good rendering
/// is refused with the check it breaks.
#[test]
fn the_deploy_assertions_refuse_the_classic_mistakes() {
    let sqlite = render("sqlite");
    let postgres = render("postgres");
    for (mode, yaml) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        // Liveness that depends on the database restarts every pod when it blips.
        rejected(
            mode,
            &mutate(yaml, "path: /healthz", "path: /readyz"),
            "liveness is GET /healthz",
        );
        // A grace period shorter than the drain: the kubelet SIGKILLs mid-drain.
        rejected(
            mode,
            &mutate(
                yaml,
                "terminationGracePeriodSeconds: 60",
                "terminationGracePeriodSeconds: 30",
            ),
            "terminationGracePeriodSeconds 30 >",
        );
        // The loopback default: no probe or Service reaches the port.
        rejected(
            mode,
            &mutate(
                yaml,
                "GRPC_ADDR: 0.0.0.0:50051",
                "GRPC_ADDR: 127.0.0.1:50051",
            ),
            "listens on every interface",
        );
        // A secret in a ConfigMap.
        rejected(
            mode,
            &mutate(
                yaml,
                "LOG_FORMAT: json",
                "LOG_FORMAT: json\n  FINTOC_SECRET_KEY: sk_live_abc",
            ),
            "FINTOC_SECRET_KEY is not a secret",
        );
        rejected(
            mode,
            &mutate(yaml, "runAsNonRoot: true", "runAsNonRoot: false"),
            "runAsNonRoot",
        );
    }
    // Two pods on one SQLite file.
    rejected(
        "sqlite",
        &mutate(&sqlite, "replicas: 1", "replicas: 2"),
        "sqlite: one replica",
    );
    rejected(
        "sqlite",
        &mutate(&sqlite, "type: Recreate", "type: RollingUpdate"),
        "sqlite: strategy Recreate",
    );
    // The store off the volume: lost on every restart.
    rejected(
        "sqlite",
        &mutate(
            &sqlite,
            "DATABASE_URL: /data/fintoc-refresh.db",
            "DATABASE_URL: /tmp/fintoc-refresh.db",
        ),
        "on a mounted, rendered PersistentVolumeClaim",
    );
    rejected(
        "postgres",
        &mutate(&postgres, "maxUnavailable: 0", "maxUnavailable: 1"),
        "postgres: maxUnavailable 0",
    );
    rejected(
        "postgres",
        &mutate(
            &postgres,
            "kind: PodDisruptionBudget",
            "kind: NotAPodDisruptionBudget",
        ),
        "postgres: a PodDisruptionBudget selects the pods",
    );
    // The database password as a literal in the pod spec.
    rejected(
        "postgres",
        &mutate(
            &postgres,
            "- name: DATABASE_URL\n          valueFrom:\n            secretKeyRef:\n              key: DATABASE_URL\n              name: fintoc-refresh\n",
            "- name: DATABASE_URL\n          value: postgres://fintoc:hunter2@db/fintoc_refresh\n",
        ),
        "DATABASE_URL comes from a secretKeyRef",
    );
}

/// The Dockerfile's runtime stage, as far as this test mirrors it: (instruction, arguments)
/// from the last `FROM` on, continuation lines joined.
fn runtime_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((word.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(word, _)| word == "FROM")
        .expect("the Dockerfile has a FROM");
    instructions.split_off(last_from)
}

/// Library file names `gcr.io/distroless/cc-debian12` ships (glibc, libgcc_s, libstdc++,
/// libgomp): a dependency outside this list (libssl, libpq …) would not load in the image.
const DISTROLESS_CC_LIBRARIES: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libgomp.so.1",
];

/// The libraries `ldd` lists for `binary`, by the absolute path they resolved to (the loader
/// included; the vDSO has no file).
fn libraries(binary: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("ldd is needed to list the binary's libraries: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "ldd {binary} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Vec::new();
    }
    let mut paths = Vec::new();
    for line in text.lines() {
        assert!(!line.contains("not found"), "a library is missing: {line}");
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim().split(' ').next().unwrap_or(""),
            None => line.trim().split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    paths
}

/// Copies `from` (following symlinks) to `root` + its absolute path `at`.
fn install(root: &Path, from: &Path, at: &Path) {
    let target = root.join(at.strip_prefix("/").unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(from, &target)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), target.display()));
}

/// A child killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.1 on `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_runtime_file_set_serves_under_chroot_as_the_non_root_user() {
    // What the Dockerfile's runtime stage holds, which this test lays out the same way.
    let stage = runtime_stage();
    let has = |word: &str, args: &str| stage.iter().any(|(w, a)| w == word && a == args);
    assert!(
        has("FROM", "gcr.io/distroless/cc-debian12:nonroot"),
        "{stage:?}"
    );
    assert!(
        has(
            "COPY",
            "--from=build /out/fintoc-refresh /usr/local/bin/fintoc-refresh"
        ),
        "{stage:?}"
    );
    assert!(
        has("COPY", "--from=build --chown=65532:65532 /out/data /data"),
        "{stage:?}"
    );
    assert!(has("USER", "65532:65532"), "{stage:?}");
    let env: Vec<(String, String)> = stage
        .iter()
        .filter(|(w, _)| w == "ENV")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let image_env = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(image_env("GRPC_ADDR"), Some("0.0.0.0:50051"));
    assert_eq!(image_env("HTTP_ADDR"), Some("0.0.0.0:8080"));
    assert_eq!(image_env("DATABASE_URL"), Some("/data/fintoc-refresh.db"));

    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test runs chroot, which needs root (CI runs as root): run it as root, it never \
         skips"
    );

    // The file set: the binary, what ldd lists, the CA bundle, /data for 65532. Nothing else:
    // no shell, no /etc/passwd, no /tmp, no /dev, no /proc.
    let root = tempfile::tempdir().unwrap();
    let binary = crate::binary::path();
    install(
        root.path(),
        Path::new(&binary),
        Path::new("/usr/local/bin/fintoc-refresh"),
    );
    let libraries = libraries(&binary);
    for library in &libraries {
        let name = library.file_name().unwrap().to_str().unwrap();
        assert!(
            DISTROLESS_CC_LIBRARIES.contains(&name),
            "the binary needs {}, which gcr.io/distroless/cc-debian12 does not ship",
            library.display()
        );
        install(root.path(), library, library);
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(ca.exists(), "the CA bundle (Debian's ca-certificates)");
    install(root.path(), ca, ca);
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let chown = Command::new("chown")
        .arg("65532:65532")
        .arg(&data)
        .status()
        .unwrap();
    assert!(chown.success());
    // Everything but /data stays root's: the non-root user can write nowhere else, as with
    // readOnlyRootFilesystem.
    std::process::Command::new("chmod")
        .arg("755")
        .arg(root.path())
        .status()
        .unwrap();

    // The server gets the image's environment only, so the host's PATH cannot find chroot.
    let chroot = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("chroot"))
        .find(|path| path.is_file())
        .expect("chroot (coreutils) is needed to run the runtime file set");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut command = Command::new(chroot);
    command
        .arg("--userspec=65532:65532")
        .arg(root.path())
        .args([
            "/usr/local/bin/fintoc-refresh",
            "serve",
            "--simulate",
            "--database-url",
            "/data/fintoc-refresh.db",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap());
    let mut child = Reaped(command.spawn().expect("chroot starts"));
    // Kept open to the end: the demo lines follow the listening line, and a closed pipe
    // would end the server.
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let Some(Ok(first)) = stdout.next() else {
        let _ = child.0.wait();
        panic!(
            "serve exited under chroot before its listening line (libraries: {libraries:?}):\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
    };
    let (_grpc, http) = crate::binary::listening_addresses(&first);
    let (status, body) = get(&http, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"), "/healthz");
    // Ready: the store was created, migrated and commits on /data as 65532.
    let (status, body) = get(&http, "/readyz");
    assert_eq!((status, body.trim()), (200, "ready"), "/readyz");
    assert!(data.join("fintoc-refresh.db").exists());
    drop(child); // killed before its stdout closes
}
