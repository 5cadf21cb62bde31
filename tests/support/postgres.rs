//! A real PostgreSQL server: a fresh cluster (`initdb`) in a temporary directory, started
//! with `pg_ctl` on a free loopback port and stopped when dropped. Logins take a password
//! (SCRAM), as in production. Run as root, the server runs as the `postgres` user, since
//! PostgreSQL refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The login every test cluster has.
pub const USER: &str = "portcullis";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Who runs the server's programs when the tests run as root.
    owner: Option<(u32, u32)>,
    pub port: u16,
    pub password: String,
    /// The server's command-line options, for `pg_ctl start`.
    options: String,
}

impl PgServer {
    /// A server that accepts plain connections.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that accepts TLS connections only, with the test server certificate of `pki`
    /// (issued for `localhost` and `127.0.0.1` by `ca.pem`).
    pub fn start_tls(pki: &super::Pki) -> Self {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&super::Pki>) -> Self {
        let bin = bin_dir();
        let owner = if effective_uid() == 0 { Some(postgres_ids()) } else { None };
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let mut server = Self { dir, bin, owner, port, password, options: String::new() };
        server.write("pwfile", &server.password);
        let data = server.data();
        let initdb = server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--pwfile",
                server.path("pwfile").to_str().unwrap(),
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "--no-instructions",
            ],
        );
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} -c fsync=off \
             -c shared_buffers=16MB -c max_connections=120",
            dir = server.dir.path().display(),
        );
        if let Some(pki) = pki {
            server.write("server.pem", &std::fs::read_to_string(pki.path("server.pem")).unwrap());
            server.write("server-key.pem", &std::fs::read_to_string(pki.path("server-key.pem")).unwrap());
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                server.path("server.pem").display(),
                server.path("server-key.pem").display()
            ));
            // TLS only: a plain connection finds no matching rule.
            let hba = data.join("pg_hba.conf");
            std::fs::write(&hba, "hostssl all all 127.0.0.1/32 scram-sha-256\n").unwrap();
            server.give(&hba);
        }
        server.options = options;
        server.resume();
        server
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&mut self) {
        let data = self.data();
        let log = self.path("server.log");
        let start = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &self.options,
                "start",
            ],
        );
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Stops the server at once, as a crash would.
    pub fn stop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }

    /// A URL for database `db`, with the password, over a plain connection.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{}@127.0.0.1:{}/{db}?sslmode=disable", self.password, self.port)
    }

    /// Creates an empty database named `name`.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\"")).unwrap();
    }

    /// Runs `sql` in database `db` with `psql`; its output, or its error message.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGSSLMODE", "prefer")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes a file the server may read (and only it: keys must not be readable by others).
    fn write(&self, file: &str, contents: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(file);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.give(&path);
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    /// Runs one of the server's programs, as the `postgres` user when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.give(self.dir.path());
        let program = self.bin.join(program);
        let mut command = match self.owner {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.args(args).current_dir(self.dir.path()).output().expect("run a PostgreSQL program")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where `initdb` and `pg_ctl` are: `$PG_BIN`, Debian's newest `/usr/lib/postgresql/N/bin`,
/// or the `PATH`. Panics, naming the fix, when PostgreSQL is not installed.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return dir.into();
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().filter_map(|entry| {
        let version: u32 = entry.file_name().to_str()?.parse().ok()?;
        let bin = entry.path().join("bin");
        bin.join("initdb").exists().then_some((version, bin))
    });
    if let Some((_, bin)) = debian.max() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists());
    on_path.expect("PostgreSQL is not installed: `apt-get install -y postgresql` (scripts/test does it)")
}

/// The effective user id of this process, read from `/proc` (no unsafe code).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    uids.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The uid and gid of the `postgres` user the PostgreSQL packages create.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))
        .expect("running as root needs the `postgres` user, which the postgresql package creates");
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}
