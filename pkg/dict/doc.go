// Package dict is dicomgw's DICOM data dictionary: for each standard data
// element of PS3.6 its tag, VR, VM, keyword and whether it is retired. It
// answers two questions, by keyword (ByKeyword: which tag is "Modality"?) and
// by tag (ByTag: which VR has (0008,0060), needed to decode a value in
// Implicit VR, PS3.5 A.1).
//
// The table is maintained as data in dictionary.tsv (which records the
// source it was converted from, DCMTK 3.6.7's dictionary of PS3.6-2022b, and
// what was left out: repeating-group ranges, private elements, the command
// group) and compiled into table_gen.go by gen.go, as static data: looking
// something up costs a binary search, and the package has no init work. A
// test fails when table_gen.go no longer matches dictionary.tsv. After editing
// the conversion (internal/table, dcmtk.go), run
//
//	go run dcmtk.go && go generate ./pkg/dict
package dict

//go:generate go run gen.go
