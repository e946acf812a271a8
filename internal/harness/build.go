package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// RepoRoot is the repository's top directory, found from this source file
// (go test and go run keep absolute source paths), so that tests and the
// benchmark work from any working directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildTo builds cmd/dicomgw into dir and returns the binary's path. The
// benchmark builds into its work directory, so that the binary measured is
// this checkout's and goes away with the directory.
func BuildTo(ctx context.Context, dir string) (string, error) {
	root := RepoRoot()
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("cannot find the repository from the harness source: %w", err)
	}
	bin := filepath.Join(dir, "dicomgw")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/dicomgw")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dicomgw: %v\n%s", err, out)
	}
	return bin, nil
}

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Binary builds dicomgw once per process (into a temporary directory, so
// that tests never race with `make build`) and returns its path. With
// $DICOMGW_BINARY set it builds nothing and returns that binary instead
// (to test a release build, or a build of another checkout).
func Binary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv("DICOMGW_BINARY"); p != "" {
			buildPath, buildErr = filepath.Abs(p)
			if buildErr == nil {
				_, buildErr = os.Stat(buildPath)
			}
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "dicomgw-bin-")
		if buildErr == nil {
			buildPath, buildErr = BuildTo(context.Background(), buildDir)
		}
	})
	return buildPath, buildErr
}

// RemoveBinary deletes what Binary built; call it once the process is done
// with gateways (from TestMain), or every run leaves a binary in $TMPDIR.
func RemoveBinary() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}
