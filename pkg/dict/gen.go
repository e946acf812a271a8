//go:build ignore

// gen.go regenerates table_gen.go from dictionary.tsv. Run it with
// "go generate ./pkg/dict" (see doc.go); the parsing and rendering live in
// internal/table so the tests can check table_gen.go is up to date.
package main

import (
	"log"
	"os"

	"github.com/dicomgw/dicomgw/pkg/dict/internal/table"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("dict/gen: ")

	f, err := os.Open("dictionary.tsv")
	if err != nil {
		log.Fatal(err)
	}
	src, err := table.Generate(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("table_gen.go", src, 0o644); err != nil {
		log.Fatal(err)
	}
}
