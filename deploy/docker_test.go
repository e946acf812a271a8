package deploy

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// instruction is one Dockerfile instruction, continuations joined.
type instruction struct {
	cmd, args string
	stage     int // index of the FROM it belongs to
}

func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(path("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	stage := -1
	var cur strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") { // a comment inside a continuation
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, instruction{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
	}
	return out
}

func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Errorf("%s %s: not in exec form (JSON array): %v", in.cmd, in.args, err)
	}
	return v
}

// TestDockerfile checks what can be checked of the image without a Docker
// engine: the builder's Go is go.mod's, the build is stamped like the
// Makefile's, the runtime stage is non-root with the promised ports,
// volumes, healthcheck and entrypoint, and what it COPYs is in the build
// context (.dockerignore). Then it runs the builder's build command itself
// (outside a container): the binaries are static, `dicomgw version` says
// what was stamped, the image's flags file is accepted, and the
// healthcheck helper answers 0 against a running gateway and 1 once it is
// gone.
func TestDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	raw, _ := os.ReadFile(path("Dockerfile"))
	if !strings.HasPrefix(string(raw), "# syntax=docker/dockerfile:1") {
		t.Errorf("Dockerfile: no # syntax=docker/dockerfile:1 line (RUN --mount needs BuildKit's syntax)")
	}
	args := map[string]string{}
	var froms []string
	final := 0
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if k, v, ok := strings.Cut(in.args, "="); ok {
				args[k] = v
			}
		case "FROM":
			froms = append(froms, in.args)
			final = in.stage
		}
	}
	gomod, _ := os.ReadFile(path("go.mod"))
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goLine == nil || args["GO_VERSION"] != string(goLine[1]) {
		t.Errorf("ARG GO_VERSION=%s, go.mod says go %s", args["GO_VERSION"], goLine[1])
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:${GO_VERSION}") || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("stages %q: want golang:${GO_VERSION}... AS build, then the runtime", froms)
	}
	if runtime := froms[len(froms)-1]; runtime != "gcr.io/distroless/static-debian12:nonroot" && runtime != "scratch" {
		t.Errorf("runtime image %q: want distroless static nonroot (or scratch)", runtime)
	}
	makefile, _ := os.ReadFile(path("Makefile"))
	mkVersion := regexp.MustCompile(`(?m)^VERSION\s*\?=\s*(\S+)`).FindSubmatch(makefile)
	if mkVersion == nil || args["VERSION"] != string(mkVersion[1]) {
		t.Errorf("ARG VERSION=%s, the Makefile's VERSION ?= %s", args["VERSION"], mkVersion[1])
	}
	if !regexp.MustCompile(`(?m)^LDFLAGS\s*:=\s*-X main\.version=\$\(VERSION\) -X main\.commit=\$\(COMMIT\)\s*$`).Match(makefile) {
		t.Errorf("the Makefile's LDFLAGS changed: keep the Dockerfile's -X flags (and this test) in step")
	}

	var build instruction
	got := map[string][]instruction{}
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in
		}
		if in.stage == final {
			got[in.cmd] = append(got[in.cmd], in)
		}
	}
	if !strings.Contains(build.args, `-X main.version=${VERSION} -X main.commit=${COMMIT}`) {
		t.Errorf("the build RUN does not stamp -X main.version=${VERSION} -X main.commit=${COMMIT}: %s", build.args)
	}
	env := strings.Join(func() []string {
		var e []string
		for _, in := range ins {
			if in.cmd == "ENV" && in.stage == build.stage {
				e = append(e, in.args)
			}
		}
		return e
	}(), " ")
	if !strings.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("the builder does not set CGO_ENABLED=0: the binary would not be static")
	}
	if u := got["USER"]; len(u) != 1 || !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(u[0].args) {
		t.Errorf("USER %v: want a numeric non-root user (Kubernetes runAsNonRoot checks numeric IDs)", u)
	}
	var exposed []string
	for _, in := range got["EXPOSE"] {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	for _, p := range []string{"11112", "2762", "9477", "9480"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
	var volumes []string
	for _, in := range got["VOLUME"] {
		volumes = append(volumes, execForm(t, in)...)
	}
	for _, v := range []string{"/var/lib/dicomgw/spool", "/var/lib/dicomgw/archive"} {
		if !slices.Contains(volumes, v) {
			t.Errorf("VOLUME %v lacks %s", volumes, v)
		}
	}
	entry := []string{}
	if e := got["ENTRYPOINT"]; len(e) == 1 {
		entry = execForm(t, e[0])
	}
	if want := []string{"/usr/local/bin/dicomgw", "serve", "--flagfile", "/etc/dicomgw/dicomgw.flags"}; !slices.Equal(entry, want) {
		t.Errorf("ENTRYPOINT %q, want %q", entry, want)
	}
	var health []string
	if h := got["HEALTHCHECK"]; len(h) == 1 {
		_, cmd, _ := strings.Cut(h[0].args, "CMD ")
		health = execForm(t, instruction{cmd: "HEALTHCHECK CMD", args: cmd})
	}
	if len(health) == 0 || health[0] != "/usr/local/bin/dicomgw-healthcheck" {
		t.Errorf("HEALTHCHECK %q: want the static helper (the image has no shell or curl)", health)
	}

	// What the build copies from the context is there, and not ignored.
	ignore := readDockerignore(t)
	for _, in := range ins {
		if in.cmd != "COPY" || strings.Contains(in.args, "--from=") {
			continue
		}
		f := strings.Fields(in.args)
		for _, src := range f[:len(f)-1] {
			if strings.HasPrefix(src, "--") {
				continue
			}
			if src != "." {
				if _, err := os.Stat(path(src)); err != nil {
					t.Errorf("COPY %s: %v", src, err)
				}
				if ignore.excluded(src) {
					t.Errorf("COPY %s: excluded by .dockerignore", src)
				}
			}
		}
	}
	for _, f := range buildInputs(t) {
		if ignore.excluded(f) {
			t.Errorf(".dockerignore excludes %s, which the image's build needs", f)
		}
	}
	for _, f := range []string{".git", "bin/dicomgw", "var/spool/queue/x.dcm", "conformance/var/x", "pkg/pdu/pdu_test.go"} {
		if !ignore.excluded(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}

	// The builder's build, run here: /out becomes a temporary directory.
	out := t.TempDir()
	script := regexp.MustCompile(`--mount=\S+\s*`).ReplaceAllString(build.args, "")
	script = strings.ReplaceAll(script, "/out/", out+"/")
	cmd := exec.Command("bash", "-euc", script)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "VERSION=9.9.9-test", "COMMIT=abc1234", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build RUN fails: %v\n%s\n%s", err, script, b)
	}
	gw := filepath.Join(out, "usr/local/bin/dicomgw")
	hc := filepath.Join(out, "usr/local/bin/dicomgw-healthcheck")
	for _, bin := range []string{gw, hc} {
		checkStatic(t, bin)
	}
	if v := mustRun(t, out, gw, "version"); strings.TrimSpace(v) != "dicomgw 9.9.9-test (commit abc1234)" {
		t.Errorf("dicomgw version: %q", v)
	}
	flagsFile := filepath.Join(out, "etc/dicomgw/dicomgw.flags")
	if b, err := os.ReadFile(flagsFile); err != nil || !strings.Contains(string(b), "--metrics-listen=:9477") {
		t.Errorf("the image's flags file %s: %v; want --metrics-listen=:9477 (the healthcheck's default)", flagsFile, err)
	}
	for _, d := range volumes {
		if fi, err := os.Stat(filepath.Join(out, d)); err != nil || !fi.IsDir() {
			t.Errorf("volume %s is not made by the build (its ownership would be root's): %v", d, err)
		}
	}

	// The image's command, with its flags file, paths and ports moved
	// here by command-line flags (which win over the file).
	dir := t.TempDir()
	g, err := harness.StartBinary(gw, filepath.Join(dir, "spool"), "--flagfile", flagsFile,
		"--archive-dir", filepath.Join(dir, "archive"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + g.MetricsAddr + "/healthz"
	if _, errOut, err := run(t, dir, hc, "--url", url); err != nil {
		t.Errorf("healthcheck against a running gateway: %v %s", err, errOut)
	}
	hcEnv := exec.Command(hc)
	hcEnv.Env = append(os.Environ(), "DICOMGW_HEALTHCHECK_URL="+url)
	if b, err := hcEnv.CombinedOutput(); err != nil {
		t.Errorf("healthcheck with $DICOMGW_HEALTHCHECK_URL: %v %s", err, b)
	}
	if err := g.Stop(20 * time.Second); err != nil {
		t.Errorf("gateway stop: %v", err)
	}
	if _, _, err := run(t, dir, hc, "--url", url, "--timeout", "2s"); err == nil {
		t.Errorf("healthcheck says healthy with the gateway gone")
	}
}

// checkStatic: no ELF interpreter and no shared libraries (distroless
// static and scratch have no libc).
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (PT_INTERP)", filepath.Base(bin))
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", filepath.Base(bin), libs)
	}
}

// buildInputs are the files `go build` reads for the image's two
// binaries, relative to the repository, plus the flags file it installs.
func buildInputs(t *testing.T) []string {
	t.Helper()
	out := mustRun(t, repo, "go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`,
		"./cmd/dicomgw", "./deploy/healthcheck")
	files := []string{"go.mod", "go.sum", "deploy/etc/dicomgw.flags"}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(repo, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range f[1:] {
			files = append(files, filepath.ToSlash(filepath.Join(rel, name)))
		}
	}
	if len(files) < 20 {
		t.Fatalf("go list found only %v", files)
	}
	return files
}

// dockerignore holds .dockerignore's patterns as regular expressions, with
// Docker's meaning: relative to the context, * within one path element,
// ** across any, a pattern excluding a directory excludes what is in it,
// ! re-includes.
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	b, err := os.ReadFile(path(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		neg := strings.HasPrefix(l, "!")
		l = strings.Trim(strings.TrimPrefix(l, "!"), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch c := l[i]; {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		d = append(d, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile(re.String()), neg})
	}
	return d
}

func (d dockerignore) excluded(rel string) bool {
	rel = strings.Trim(filepath.ToSlash(filepath.Clean(rel)), "/")
	ex := false
	for _, p := range d {
		if p.re.MatchString(rel) {
			ex = !p.negate
		}
	}
	return ex
}
