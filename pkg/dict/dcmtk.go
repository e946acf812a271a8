//go:build ignore

// dcmtk.go rewrites dictionary.tsv from DCMTK's data dictionary. It is run by
// hand, where DCMTK 3.6.7 is installed (Debian: libdcmtk17), from pkg/dict:
//
//	go run dcmtk.go && go generate .
//
// An optional argument names another dicom.dic. The build and the tests never
// need DCMTK: dictionary.tsv is what is committed and generated from.
package main

import (
	"log"
	"os"

	"github.com/dicomgw/dicomgw/pkg/dict/internal/table"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("dict/dcmtk: ")

	path := table.DcmtkDic
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	rows, skipped, err := table.FromDcmtk(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("dictionary.tsv", table.WriteTSV(rows, skipped), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("%d elements written to dictionary.tsv", len(rows))
}
