// Package uid is dicomgw's registry of the DICOM UIDs it negotiates with:
// every Storage SOP Class and every Transfer Syntax of PS3.6 Table A-1 (retired
// ones included), the Verification SOP Class and the DICOM Application Context
// Name, together with the UID syntax rules of PS3.5 9.1.
//
// The table is maintained as data in registry.tsv (which records the PS3.6
// source it was extracted from) and compiled into table_gen.go by gen.go. The
// association acceptor and the generated DICOM Conformance Statement both read
// it through StorageSOPClasses and TransferSyntaxes, and a test fails when
// table_gen.go no longer matches registry.tsv. After editing registry.tsv, run
//
//	go generate ./pkg/uid
package uid

//go:generate go run gen.go
