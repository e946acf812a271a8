package dcmhead

import (
	"bytes"
	"errors"
	"testing"
)

// TestTruncationSweep walks prefixes of corpus data sets. A prefix may only
// succeed where it ends exactly after a complete top-level element; every
// other prefix must fail with a *FormatError, never panic, and never read
// beyond the prefix.
//
// Small files are swept at every length: then the successful lengths must
// be exactly one per top-level element (plus the empty prefix), the i-th
// holding i elements, and the last being the full data set. Big files are
// swept densely at both ends and sampled in between.
func TestTruncationSweep(t *testing.T) {
	files := []string{
		"mr-explicit-le.dcm",                         // trailing padding
		"mr-implicit-le.dcm",                         // implicit VR
		"mr-explicit-be.dcm",                         // big endian
		"sr-basic-undefined-length.dcm",              // undefined-length sequences and items
		"edge-un-vr-private-sequence.dcm",            // CP-246
		"edge-private-sq-implicit-vr.dcm",            // defined-length private SQ, implicit
		"seg-binary-implicit-le.dcm",                 // deep implicit nesting
		"sc-rgb-rle-32bit-2frame.dcm",                // encapsulated
		"sc-deflated-explicit-le.dcm",                // deflated, gzip trailer
		"us-multiframe-rle-palette.dcm",              // big: sampled
		"ct-enhanced-multiframe.dcm",                 // big, 26 undefined-length SQ: sampled
		"dx-jpeg-lossless-un-vr-3mb.dcm",             // big, UN on standard attributes: sampled
		"us-multiframe-jpeg-baseline-fragmented.dcm", // 45 fragments: sampled
	}
	if testing.Short() {
		files = files[:5]
	}
	for _, name := range files {
		c := corpusByName(t, name)
		t.Run(name, func(t *testing.T) {
			ds := c.dataSet()
			n := len(ds)
			full, err := walkCorpusFile(c)
			if err != nil {
				t.Fatal(err)
			}
			const dense = 12 << 10
			exhaustive := n <= dense*2
			var lengths []int
			for k := 0; k <= n; k++ {
				if exhaustive || k < dense || k > n-dense || k%211 == 0 {
					lengths = append(lengths, k)
				}
			}
			var successes []int
			var elems []int
			last := -1
			for _, k := range lengths {
				cr := &countingReaderAt{r: bytes.NewReader(c.data), lo: c.meta.dataSetOffset, hi: c.meta.dataSetOffset + int64(k)}
				if k == 0 {
					cr.hi = 0 // no read may happen at all; checked below
				}
				sum, err := Walk(cr, c.meta.dataSetOffset, int64(k), c.enc)
				if cr.bad != nil {
					t.Fatalf("prefix %d: %v", k, cr.bad)
				}
				if k == 0 && cr.calls != 0 && c.enc != DeflatedExplicitVRLittleEndian {
					t.Fatalf("empty prefix: %d reads", cr.calls)
				}
				if err != nil {
					var fe *FormatError
					if !errors.As(err, &fe) {
						t.Fatalf("prefix %d: not a FormatError: %v", k, err)
					}
					if c.enc != DeflatedExplicitVRLittleEndian && (fe.Offset < 0 || fe.Offset > int64(k)) {
						t.Fatalf("prefix %d: error offset %d outside the prefix: %v", k, fe.Offset, err)
					}
					continue
				}
				if sum.Size != int64(k) {
					t.Fatalf("prefix %d: Size %d", k, sum.Size)
				}
				if sum.Elements <= last && k != 0 && c.enc != DeflatedExplicitVRLittleEndian {
					t.Fatalf("prefix %d succeeded with %d elements, not more than a shorter prefix", k, sum.Elements)
				}
				if k < n && sum.Elements >= full.Elements && c.enc != DeflatedExplicitVRLittleEndian {
					t.Fatalf("strict prefix %d succeeded with all %d elements", k, sum.Elements)
				}
				last = sum.Elements
				successes = append(successes, k)
				elems = append(elems, sum.Elements)
			}
			if len(successes) == 0 || successes[len(successes)-1] != n {
				t.Fatalf("the full data set did not succeed")
			}
			if c.enc == DeflatedExplicitVRLittleEndian {
				// Only the complete deflate stream, alone or with its gzip
				// trailer; the inflated walk is the same either way.
				if len(successes) != 2 || successes[0] != n-8 || elems[0] != full.Elements {
					t.Errorf("deflated prefixes succeeded at %v", successes)
				}
				return
			}
			if exhaustive {
				if len(successes) != full.Elements+1 {
					t.Errorf("%d prefixes succeeded, want one per element plus the empty one (%d)", len(successes), full.Elements+1)
				}
				for i, e := range elems {
					if e != i {
						t.Fatalf("success %d (prefix %d) has %d elements", i, successes[i], e)
					}
				}
			}
			t.Logf("%d prefixes walked, %d succeeded", len(lengths), len(successes))
		})
	}
}
