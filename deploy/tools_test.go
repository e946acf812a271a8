package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// TestMain removes the dicomgw binary the harness built for this run.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

// repo is the repository's top directory.
var repo = harness.RepoRoot()

// path is a file of the repository, from its top directory.
func path(rel string) string { return filepath.Join(repo, filepath.FromSlash(rel)) }

// tool finds an external tool the deployment tests run (helm, promtool,
// systemd-analyze): in $PATH, or in $(go env GOPATH)/bin where
// scripts/install-test-deps.sh puts helm. Missing, the test is skipped,
// unless DICOMGW_DEPLOY_TOOLS=required (make test), when it fails.
func tool(t *testing.T, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	msg := name + " is not installed (" + install + "; or run scripts/install-test-deps.sh)"
	if os.Getenv("DICOMGW_DEPLOY_TOOLS") == "required" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func helmTool(t *testing.T) string {
	return tool(t, "helm", "go install helm.sh/helm/v3/cmd/helm@v3.16.3")
}

func promtoolTool(t *testing.T) string {
	return tool(t, "promtool", "apt-get install prometheus")
}

// run runs a tool to its end and returns its stdout and stderr.
func run(t *testing.T, dir, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// mustRun is run, failing the test when the tool does.
func mustRun(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// binary is the dicomgw binary built from this checkout.
func binary(t *testing.T) string {
	t.Helper()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
