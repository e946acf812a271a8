// Command gen rewrites the generated tables of dicomgw's DICOM Conformance
// Statement (SOP classes, transfer syntaxes, defaults, implementation
// identification) from the code's own tables:
//
//	go run ./conformance/gen            # rewrites conformance/statement.md
//	go run ./conformance/gen -check     # exits 1 when it is out of date
//
// The blocks and their markers are described in
// conformance/internal/statement.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dicomgw/dicomgw/conformance/internal/statement"
)

func main() {
	file := flag.String("file", "", "the statement (default: conformance/statement.md of the module this runs in)")
	check := flag.Bool("check", false, "only check that the file is up to date")
	flag.Parse()
	if *file == "" {
		root, err := moduleRoot()
		if err != nil {
			fatal(err)
		}
		*file = filepath.Join(root, "conformance", "statement.md")
	}
	doc, err := os.ReadFile(*file)
	if err != nil {
		fatal(err)
	}
	out, err := statement.Update(doc)
	if err != nil {
		fatal(fmt.Errorf("%s: %w", *file, err))
	}
	if bytes.Equal(out, doc) {
		return
	}
	if *check {
		fatal(fmt.Errorf("%s is out of date: run go run ./conformance/gen", *file))
	}
	if err := os.WriteFile(*file, out, 0o644); err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "gen: rewrote %s\n", *file)
}

// moduleRoot is the nearest directory with a go.mod, from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "gen: %v\n", err)
	os.Exit(1)
}
