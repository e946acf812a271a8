package uid

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Well-known UIDs (PS3.6 Table A-1).
const (
	// Verification is the Verification SOP Class (C-ECHO, PS3.4 A).
	Verification = "1.2.840.10008.1.1"
	// ApplicationContext is the DICOM Application Context Name (PS3.7 A.2.1).
	ApplicationContext = "1.2.840.10008.3.1.1.1"

	// ImplicitVRLittleEndian is the default Transfer Syntax for DICOM
	// (PS3.5 10.1), which every acceptor must support.
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	// ExplicitVRLittleEndian is PS3.5 A.2.
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
	// DeflatedExplicitVRLittleEndian is PS3.5 A.5.
	DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
	// ExplicitVRBigEndian is PS3.5 A.3 (retired).
	ExplicitVRBigEndian = "1.2.840.10008.1.2.2"
)

// Kind says what a registry entry identifies.
type Kind uint8

// Kinds of registry entries.
const (
	KindStorage            Kind = iota + 1 // a Storage SOP Class (C-STORE-able object)
	KindTransferSyntax                     // a Transfer Syntax
	KindVerification                       // the Verification SOP Class
	KindApplicationContext                 // the DICOM Application Context Name
)

// String returns the name used for k in registry.tsv, e.g. "storage".
func (k Kind) String() string {
	switch k {
	case KindStorage:
		return "storage"
	case KindTransferSyntax:
		return "transfer-syntax"
	case KindVerification:
		return "verification"
	case KindApplicationContext:
		return "application-context"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Encoding is how a Transfer Syntax encodes the data set itself (PS3.5 10 and
// Annex A), independently of how it compresses Pixel Data.
type Encoding uint8

// Data set encodings.
const (
	EncodingImplicitVRLittleEndian         Encoding = iota + 1 // PS3.5 A.1
	EncodingExplicitVRLittleEndian                             // PS3.5 A.2
	EncodingExplicitVRBigEndian                                // PS3.5 A.3
	EncodingDeflatedExplicitVRLittleEndian                     // PS3.5 A.5: explicit VR LE, then deflated
)

// String returns the name used for e in registry.tsv, e.g. "explicit-le".
func (e Encoding) String() string {
	switch e {
	case EncodingImplicitVRLittleEndian:
		return "implicit-le"
	case EncodingExplicitVRLittleEndian:
		return "explicit-le"
	case EncodingExplicitVRBigEndian:
		return "explicit-be"
	case EncodingDeflatedExplicitVRLittleEndian:
		return "deflated-explicit-le"
	}
	return "Encoding(" + strconv.Itoa(int(e)) + ")"
}

// Entry is one UID of the registry.
type Entry struct {
	UID     string
	Name    string // PS3.6 name, without "(Retired)"
	Keyword string // PS3.6 keyword
	Kind    Kind
	Retired bool // retired in PS3.6; still accepted from peers
}

// TransferSyntax is a registry entry of kind KindTransferSyntax.
type TransferSyntax struct {
	Entry
	Encoding Encoding
	// Encapsulated reports whether Pixel Data is in the encapsulated
	// (fragment) format of PS3.5 A.4, as for JPEG, RLE, MPEG and the like.
	Encapsulated bool
}

// entries indexes every registry entry and syntaxes every transfer syntax by
// UID. registry.Parse has already rejected duplicate UIDs in registry.tsv.
var (
	entries  = make(map[string]Entry, len(storageSOPClasses)+len(transferSyntaxes)+len(otherEntries))
	syntaxes = make(map[string]TransferSyntax, len(transferSyntaxes))
)

func init() {
	for _, e := range storageSOPClasses {
		entries[e.UID] = e
	}
	for _, ts := range transferSyntaxes {
		entries[ts.UID] = ts.Entry
		syntaxes[ts.UID] = ts
	}
	for _, e := range otherEntries {
		entries[e.UID] = e
	}
}

// Lookup returns the registry entry for uid, of any kind. uid must be exact:
// strip padding with Trim first.
func Lookup(uid string) (Entry, bool) {
	e, ok := entries[uid]
	return e, ok
}

// IsStorageSOPClass reports whether uid is a Storage SOP Class of PS3.4
// (retired ones included). Storage Commitment, Media Storage Directory
// (DICOMDIR) and other service UIDs are not: they cannot be C-STOREd.
func IsStorageSOPClass(uid string) bool {
	e, ok := entries[uid]
	return ok && e.Kind == KindStorage
}

// LookupTransferSyntax returns the Transfer Syntax with the given UID.
func LookupTransferSyntax(uid string) (TransferSyntax, bool) {
	ts, ok := syntaxes[uid]
	return ts, ok
}

// StorageSOPClasses returns every Storage SOP Class, retired ones included,
// sorted by UID (numerically, component by component). The slice is a copy
// the caller may modify.
func StorageSOPClasses() []Entry {
	return slices.Clone(storageSOPClasses)
}

// TransferSyntaxes returns every Transfer Syntax of PS3.6, retired ones
// included, sorted by UID like StorageSOPClasses. It also lists syntaxes that
// carry no Pixel Data in the data set (JPIP Referenced, SMPTE ST 2110) and the
// retired media-only pseudo syntaxes RFC 2557 MIME Encapsulation and XML
// Encoding; callers choosing what to accept decide which of those they want.
// The slice is a copy the caller may modify.
func TransferSyntaxes() []TransferSyntax {
	return slices.Clone(transferSyntaxes)
}

// MaxLength is the maximum length of a UID (PS3.5 9.1).
const MaxLength = 64

// ErrInvalid is wrapped by every error Valid returns.
var ErrInvalid = errors.New("invalid UID")

// Valid checks uid against the UID encoding rules of PS3.5 9.1: 1 to 64
// characters, only digits and '.', every component non-empty (so it starts
// and ends with a digit and has no ".."). The error says which rule failed.
//
// Padding is not accepted here: strip it with Trim first.
//
// PS3.5 9.1 also forbids a leading zero in a multi-digit component ("1.02"),
// but such UIDs occur in real data from long-deployed equipment. They are
// still unambiguous identifiers made of digits and dots, so Valid accepts
// them. Valid is the test for a UID that names something: an abstract or
// transfer syntax in negotiation, a URL path segment, an archive directory.
// Which UIDs a C-STORE may carry is decided by a Policy, with Check, which
// counts the leading zero as a (tolerable) problem.
func Valid(uid string) error {
	switch {
	case uid == "":
		return fmt.Errorf("%w: empty", ErrInvalid)
	case len(uid) > MaxLength:
		return fmt.Errorf("%w: %d characters long, PS3.5 9.1 allows at most %d", ErrInvalid, len(uid), MaxLength)
	}
	for i := 0; i < len(uid); i++ {
		if c := uid[i]; c != '.' && (c < '0' || c > '9') {
			return fmt.Errorf("%w: %q has %q at offset %d; only digits and '.' are allowed", ErrInvalid, uid, c, i)
		}
	}
	switch {
	case uid[0] == '.':
		return fmt.Errorf("%w: %q starts with '.', not a digit", ErrInvalid, uid)
	case uid[len(uid)-1] == '.':
		return fmt.Errorf("%w: %q ends with '.', not a digit", ErrInvalid, uid)
	}
	if i := strings.Index(uid, ".."); i >= 0 {
		return fmt.Errorf("%w: %q has an empty component at offset %d", ErrInvalid, uid, i+1)
	}
	return nil
}

// Trim removes the padding peers put around UIDs: trailing NULs (PS3.5 9.1
// pads a UI value to even length with one NUL) and spaces, which some
// implementations pad with instead, in any mix, plus leading spaces. Other
// characters, including NULs inside the value, are left for Valid to reject.
func Trim(s string) string {
	return strings.TrimLeft(strings.TrimRight(s, "\x00 "), " ")
}
