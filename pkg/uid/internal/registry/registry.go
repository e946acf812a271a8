// Package registry reads pkg/uid/registry.tsv and renders it as Go source
// for package uid (table_gen.go).
//
// It is shared by the generator (pkg/uid/gen.go, run by go generate) and by
// the uid tests, which regenerate the table in memory and compare it with the
// committed table_gen.go so the two cannot drift apart.
package registry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/format"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Row is one UID line of registry.tsv.
type Row struct {
	UID     string
	Name    string
	Keyword string
	Kind    string // one of the Kind* tokens
	Retired bool

	// Transfer syntaxes only; empty / false otherwise.
	Encoding     string // one of the Encoding* tokens
	Encapsulated bool
}

// The kind column of registry.tsv.
const (
	KindStorage            = "storage"
	KindTransferSyntax     = "transfer-syntax"
	KindVerification       = "verification"
	KindApplicationContext = "application-context"
)

// The encoding column of registry.tsv (transfer syntaxes only).
const (
	EncodingImplicitLE         = "implicit-le"
	EncodingExplicitLE         = "explicit-le"
	EncodingExplicitBE         = "explicit-be"
	EncodingDeflatedExplicitLE = "deflated-explicit-le"
)

// kindIdent and encodingIdent map the TSV tokens to the identifiers package
// uid declares for them.
var kindIdent = map[string]string{
	KindStorage:            "KindStorage",
	KindTransferSyntax:     "KindTransferSyntax",
	KindVerification:       "KindVerification",
	KindApplicationContext: "KindApplicationContext",
}

var encodingIdent = map[string]string{
	EncodingImplicitLE:         "EncodingImplicitVRLittleEndian",
	EncodingExplicitLE:         "EncodingExplicitVRLittleEndian",
	EncodingExplicitBE:         "EncodingExplicitVRBigEndian",
	EncodingDeflatedExplicitLE: "EncodingDeflatedExplicitVRLittleEndian",
}

const numColumns = 7

// Parse reads registry.tsv. Blank lines and lines starting with '#' are
// ignored; every other line must have exactly seven tab-separated columns:
// uid, name, keyword, kind, retired, encoding, encapsulated. The last two are
// required for transfer syntaxes and must be empty for everything else.
//
// Parse rejects malformed rows, invalid or duplicate UIDs and duplicate
// keywords, naming the offending line. Rows are returned in file order.
func Parse(r io.Reader) ([]Row, error) {
	var (
		rows     []Row
		uids     = map[string]int{}
		keywords = map[string]int{}
		errs     []error
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		row, err := parseRow(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if prev, dup := uids[row.UID]; dup {
			errs = append(errs, fmt.Errorf("line %d: UID %s already on line %d", n, row.UID, prev))
			continue
		}
		if prev, dup := keywords[row.Keyword]; dup {
			errs = append(errs, fmt.Errorf("line %d: keyword %s already on line %d", n, row.Keyword, prev))
			continue
		}
		uids[row.UID] = n
		keywords[row.Keyword] = n
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(rows) == 0 {
		return nil, errors.New("registry has no rows")
	}
	return rows, nil
}

func parseRow(line string) (Row, error) {
	cols := strings.Split(line, "\t")
	if len(cols) != numColumns {
		return Row{}, fmt.Errorf("%d columns, want %d", len(cols), numColumns)
	}
	for i, c := range cols {
		if c != strings.TrimSpace(c) {
			return Row{}, fmt.Errorf("column %d has leading or trailing white space", i+1)
		}
	}
	row := Row{UID: cols[0], Name: cols[1], Keyword: cols[2], Kind: cols[3], Encoding: cols[5]}
	if err := checkUID(row.UID); err != nil {
		return Row{}, err
	}
	if row.Name == "" {
		return Row{}, fmt.Errorf("%s: empty name", row.UID)
	}
	if !isIdent(row.Keyword) {
		return Row{}, fmt.Errorf("%s: keyword %q is not an identifier", row.UID, row.Keyword)
	}
	if _, ok := kindIdent[row.Kind]; !ok {
		return Row{}, fmt.Errorf("%s: unknown kind %q", row.UID, row.Kind)
	}
	var err error
	if row.Retired, err = parseBool(cols[4]); err != nil {
		return Row{}, fmt.Errorf("%s: retired: %w", row.UID, err)
	}
	if row.Kind == KindTransferSyntax {
		if _, ok := encodingIdent[row.Encoding]; !ok {
			return Row{}, fmt.Errorf("%s: unknown encoding %q", row.UID, row.Encoding)
		}
		if row.Encapsulated, err = parseBool(cols[6]); err != nil {
			return Row{}, fmt.Errorf("%s: encapsulated: %w", row.UID, err)
		}
	} else if cols[5] != "" || cols[6] != "" {
		return Row{}, fmt.Errorf("%s: encoding and encapsulated are only for transfer syntaxes", row.UID)
	}
	return row, nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%q is neither true nor false", s)
}

// checkUID applies PS3.5 9.1 strictly, leading zeros included: the registry
// holds only UIDs the standard itself assigned.
func checkUID(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("UID %q: length %d not in 1..64", s, len(s))
	}
	for _, c := range strings.Split(s, ".") {
		if c == "" {
			return fmt.Errorf("UID %q: empty component", s)
		}
		for i := 0; i < len(c); i++ {
			if c[i] < '0' || c[i] > '9' {
				return fmt.Errorf("UID %q: %q is not a digit", s, c[i])
			}
		}
		if len(c) > 1 && c[0] == '0' {
			return fmt.Errorf("UID %q: component %q has a leading zero", s, c)
		}
	}
	return nil
}

func isIdent(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isLetter(s[i]) && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

// CompareUIDs orders two UIDs component by component, numerically, so that
// 1.2.840.10008.1.2.4.50 sorts before 1.2.840.10008.1.2.4.100. It expects
// UIDs without leading zeros (as in the registry); for those, numeric order is
// the order of (length, bytes) of each component.
func CompareUIDs(a, b string) int {
	for a != "" && b != "" {
		var ca, cb string
		ca, a, _ = strings.Cut(a, ".")
		cb, b, _ = strings.Cut(b, ".")
		if c := len(ca) - len(cb); c != 0 {
			return c
		}
		if c := strings.Compare(ca, cb); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// Render returns table_gen.go for rows: the storage SOP classes, the transfer
// syntaxes and the remaining entries as three slices, each sorted with
// CompareUIDs, formatted with go/format.
func Render(rows []Row) ([]byte, error) {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b Row) int { return CompareUIDs(a.UID, b.UID) })

	var storage, ts, other []Row
	for _, r := range rows {
		switch r.Kind {
		case KindStorage:
			storage = append(storage, r)
		case KindTransferSyntax:
			ts = append(ts, r)
		case KindVerification, KindApplicationContext:
			other = append(other, r)
		default:
			return nil, fmt.Errorf("%s: unknown kind %q", r.UID, r.Kind)
		}
	}

	var b bytes.Buffer
	b.WriteString("// Code generated by gen.go from registry.tsv; DO NOT EDIT.\n\n")
	b.WriteString("package uid\n\n")

	fmt.Fprintf(&b, "// storageSOPClasses holds the %d Storage SOP Classes of registry.tsv,\n", len(storage))
	b.WriteString("// sorted by UID.\n")
	b.WriteString("var storageSOPClasses = []Entry{\n")
	for _, r := range storage {
		fmt.Fprintf(&b, "\t%s,\n", entryLit(r))
	}
	b.WriteString("}\n\n")

	fmt.Fprintf(&b, "// transferSyntaxes holds the %d Transfer Syntaxes of registry.tsv,\n", len(ts))
	b.WriteString("// sorted by UID.\n")
	b.WriteString("var transferSyntaxes = []TransferSyntax{\n")
	for _, r := range ts {
		enc, ok := encodingIdent[r.Encoding]
		if !ok {
			return nil, fmt.Errorf("%s: unknown encoding %q", r.UID, r.Encoding)
		}
		fmt.Fprintf(&b, "\t{Entry: Entry%s, Encoding: %s, Encapsulated: %t},\n", entryLit(r), enc, r.Encapsulated)
	}
	b.WriteString("}\n\n")

	b.WriteString("// otherEntries holds the remaining entries of registry.tsv (Verification,\n")
	b.WriteString("// the DICOM Application Context), sorted by UID.\n")
	b.WriteString("var otherEntries = []Entry{\n")
	for _, r := range other {
		fmt.Fprintf(&b, "\t%s,\n", entryLit(r))
	}
	b.WriteString("}\n")

	out, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting generated source: %w", err)
	}
	return out, nil
}

// entryLit returns the composite literal of an Entry for r, without the type
// (Render adds it where gofmt -s would not elide it).
func entryLit(r Row) string {
	return fmt.Sprintf("{UID: %s, Name: %s, Keyword: %s, Kind: %s, Retired: %t}",
		strconv.Quote(r.UID), strconv.Quote(r.Name), strconv.Quote(r.Keyword), kindIdent[r.Kind], r.Retired)
}

// Generate parses registry.tsv from r and renders table_gen.go.
func Generate(r io.Reader) ([]byte, error) {
	rows, err := Parse(r)
	if err != nil {
		return nil, err
	}
	return Render(rows)
}
