//go:build ignore

// gen.go regenerates table_gen.go from registry.tsv. Run it with
// "go generate ./pkg/uid" (see doc.go); the parsing and rendering live in
// internal/registry so the tests can check table_gen.go is up to date.
package main

import (
	"log"
	"os"

	"github.com/dicomgw/dicomgw/pkg/uid/internal/registry"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("uid/gen: ")

	f, err := os.Open("registry.tsv")
	if err != nil {
		log.Fatal(err)
	}
	src, err := registry.Generate(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("table_gen.go", src, 0o644); err != nil {
		log.Fatal(err)
	}
}
