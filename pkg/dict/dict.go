package dict

import (
	"sort"
	"strings"
)

// Entry is one data element of the dictionary.
type Entry struct {
	// Tag is the group number in the high 16 bits, the element number in the
	// low 16 bits: 0x00080060 is (0008,0060).
	Tag uint32
	// VR is the value representation of PS3.5 6.2, e.g. "CS". Where PS3.6
	// allows several it lists them as PS3.6 does: "US or SS", "OB or OW",
	// "US or OW", "US or SS or OW".
	VR string
	// VM is the value multiplicity, e.g. "1", "1-n", "2-2n".
	VM string
	// Keyword is the PS3.6 keyword, e.g. "Modality".
	Keyword string
	// Retired is true for elements PS3.6 has retired.
	Retired bool
}

// ByTag returns the entry of the data element with the given tag. Private
// elements and repeating groups (curves, overlays) are not in the dictionary.
func ByTag(tag uint32) (Entry, bool) {
	i := sort.Search(len(entries), func(i int) bool { return entries[i].Tag >= tag })
	if i < len(entries) && entries[i].Tag == tag {
		return entries[i], true
	}
	return Entry{}, false
}

// ByKeyword returns the entry of the data element with the given keyword,
// which must match exactly (keywords are case-sensitive).
func ByKeyword(keyword string) (Entry, bool) {
	i := sort.Search(len(byKeyword), func(i int) bool {
		return strings.Compare(entries[byKeyword[i]].Keyword, keyword) >= 0
	})
	if i < len(byKeyword) && entries[byKeyword[i]].Keyword == keyword {
		return entries[byKeyword[i]], true
	}
	return Entry{}, false
}
