package dcmhead

// Collecting the values of requested top-level elements during the walk.

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/dicomgw/dicomgw/pkg/dict"
)

// MaxValueLength bounds the value length of the elements WalkCollect
// collects: a longer value is skipped, as if it had not been asked for. It
// equals MaxUIDLength, so that a collected value always fits the read window.
const MaxValueLength = 1024

// vrCode packs a two-letter VR as the walk reads it from an explicit VR
// element header.
func vrCode(s string) uint16 {
	if len(s) != 2 {
		return 0
	}
	return uint16(s[0])<<8 | uint16(s[1])
}

// valueKind says how WalkCollect turns a value of some VR into a string.
type valueKind uint8

const (
	kindNone  valueKind = iota // not collected
	kindText                   // bytes, trailing spaces and NULs trimmed
	kindUint                   // unsigned binary integers (US, UL, UV)
	kindInt                    // signed binary integers (SS, SL, SV)
	kindFloat                  // IEEE 754 (FL, FD)
)

// kindOf returns how a value of VR vr is collected and, for binary VRs, the
// size of one value.
func kindOf(vr uint16) (valueKind, int) {
	switch vr {
	case 'A'<<8 | 'E', 'A'<<8 | 'S', 'C'<<8 | 'S', 'D'<<8 | 'A', 'D'<<8 | 'S', 'D'<<8 | 'T',
		'I'<<8 | 'S', 'L'<<8 | 'O', 'L'<<8 | 'T', 'P'<<8 | 'N', 'S'<<8 | 'H', 'S'<<8 | 'T',
		'T'<<8 | 'M', 'U'<<8 | 'C', 'U'<<8 | 'I', 'U'<<8 | 'R', 'U'<<8 | 'T':
		return kindText, 1
	case 'U'<<8 | 'S':
		return kindUint, 2
	case 'U'<<8 | 'L':
		return kindUint, 4
	case 'U'<<8 | 'V':
		return kindUint, 8
	case 'S'<<8 | 'S':
		return kindInt, 2
	case 'S'<<8 | 'L':
		return kindInt, 4
	case 'S'<<8 | 'V':
		return kindInt, 8
	case 'F'<<8 | 'L':
		return kindFloat, 4
	case 'F'<<8 | 'D':
		return kindFloat, 8
	}
	return kindNone, 0
}

// Collects reports whether WalkCollect collects values of VR vr, as PS3.6
// writes it (a VR that PS3.6 gives as a choice, such as "US or SS", is not
// collected in Implicit VR, where the data does not say which it is). A route
// on an element whose dictionary VR is not collected could never see its
// value.
func Collects(vr string) bool {
	k, _ := kindOf(vrCode(vr))
	return k != kindNone
}

// wanted is one element WalkCollect was asked for.
type wanted struct {
	tag    uint32
	dictVR uint16 // the dictionary's VR when it is a single collected VR, else 0
}

// newWants sorts and deduplicates the requested tags and looks up the VR
// each has in the dictionary, for Implicit VR and for UN.
func newWants(tags []uint32) []wanted {
	if len(tags) == 0 {
		return nil
	}
	tags = slices.Clone(tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	ws := make([]wanted, len(tags))
	for i, t := range tags {
		ws[i].tag = t
		if e, ok := dict.ByTag(t); ok {
			if k, _ := kindOf(vrCode(e.VR)); k != kindNone {
				ws[i].dictVR = vrCode(e.VR)
			}
		}
	}
	return ws
}

// find returns the index of tag in ws, or -1.
func findWant(ws []wanted, tag uint32) int {
	lo, hi := 0, len(ws)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ws[m].tag < tag {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(ws) && ws[lo].tag == tag {
		return lo
	}
	return -1
}

// collectVR returns the VR by which to decode the value of a wanted
// top-level element, or 0 when it is not collected. In explicit VR the
// element's own VR decides; UN (an element the sender did not know, PS3.5
// 6.2.2) is decoded by the dictionary's VR when that is a text VR, whose
// bytes do not depend on byte order, or a binary one in little endian. In
// implicit VR only the dictionary knows the VR.
func collectVR(m mode, w wanted, vr uint16) uint16 {
	if !m.explicit {
		return w.dictVR
	}
	if vr == vrUN {
		if k, _ := kindOf(w.dictVR); k == kindText || k != kindNone && !m.bigEndian {
			return w.dictVR
		}
		return 0
	}
	if k, _ := kindOf(vr); k != kindNone {
		return vr
	}
	return 0
}

// formatValue renders the value b of VR vr as Summary.Values holds it. ok
// is false for a binary value whose length is not a multiple of its size.
func formatValue(b []byte, vr uint16, bigEndian bool) (string, bool) {
	kind, size := kindOf(vr)
	if kind == kindText {
		return string(bytes.TrimRight(b, " \x00")), true
	}
	if kind == kindNone || len(b)%size != 0 {
		return "", false
	}
	var order binary.ByteOrder = binary.LittleEndian
	if bigEndian {
		order = binary.BigEndian
	}
	var s strings.Builder
	var num [32]byte
	for i := 0; i < len(b); i += size {
		if i > 0 {
			s.WriteByte('\\')
		}
		var u uint64
		switch size {
		case 2:
			u = uint64(order.Uint16(b[i:]))
		case 4:
			u = uint64(order.Uint32(b[i:]))
		case 8:
			u = order.Uint64(b[i:])
		}
		var t []byte
		switch kind {
		case kindUint:
			t = strconv.AppendUint(num[:0], u, 10)
		case kindInt:
			t = strconv.AppendInt(num[:0], signExtend(u, size), 10)
		case kindFloat:
			if size == 4 {
				t = strconv.AppendFloat(num[:0], float64(math.Float32frombits(uint32(u))), 'g', -1, 32)
			} else {
				t = strconv.AppendFloat(num[:0], math.Float64frombits(u), 'g', -1, 64)
			}
		}
		s.Write(t)
	}
	return s.String(), true
}

func signExtend(u uint64, size int) int64 {
	switch size {
	case 2:
		return int64(int16(u))
	case 4:
		return int64(int32(u))
	}
	return int64(u)
}

// collect reads the value of a wanted top-level element (header at start,
// vl bytes, at most MaxValueLength) and records it in the Summary unless an
// element with the same tag came first. A value that does not decode is
// skipped. A value overrunning the data set fails exactly as skipping it
// would.
func (w *walker) collect(tag uint32, vr uint16, start int64, vl uint32, bigEndian bool) error {
	b, err := w.peek(int(vl))
	if err != nil {
		return err
	}
	if len(b) < int(vl) {
		return w.overrun(ofElement, tag, start, int64(vl))
	}
	if _, dup := w.sum.Values[tag]; !dup {
		if s, ok := formatValue(b, vr, bigEndian); ok {
			w.setValue(tag, s)
		}
	}
	w.pos += int64(vl)
	return nil
}

func (w *walker) setValue(tag uint32, s string) {
	if w.sum.Values == nil {
		w.sum.Values = make(map[uint32]string, len(w.want))
	}
	w.sum.Values[tag] = s
}
