package testkit

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// CheckSub checks a metrics type's Sub (an interval from two snapshots):
// it fills two values a and b with distinct numbers in every field,
// nested structs and arrays included, and requires each numeric field of
// sub(a, b) to be a-b, so a field added to the type and forgotten in Sub
// fails, named by its path ("Prealloc.Ahead", "Lat[3]"). kept names the
// fields (or whole nested structs) that Sub takes from its receiver a
// instead of subtracting, the gauges; a kept name that matches no field
// fails too, so the list cannot go stale. A field that is neither numeric
// nor kept (a string, a bool) fails: Sub cannot subtract it, so it must
// be listed. CheckSub reports with t.Errorf only.
func CheckSub[T any](t testing.TB, sub func(a, b T) T, kept ...string) {
	t.Helper()
	var a, b T
	if reflect.TypeOf(a).Kind() != reflect.Struct {
		t.Errorf("CheckSub: %T is not a struct", a)
		return
	}
	la, errs := leaves(reflect.ValueOf(&a).Elem())
	for _, e := range errs {
		t.Errorf("CheckSub %T: %s", a, e)
	}
	if len(errs) > 0 {
		return
	}
	lb, _ := leaves(reflect.ValueOf(&b).Elem())
	isKept := func(path string) bool {
		return slices.ContainsFunc(kept, func(k string) bool { return within(path, k) })
	}
	for _, k := range kept {
		if !slices.ContainsFunc(la, func(l leaf) bool { return within(l.path, k) }) {
			t.Errorf("CheckSub %T: kept field %q does not exist", a, k)
		}
	}
	for i := range la {
		if !numeric(la[i].v.Kind()) && !isKept(la[i].path) {
			t.Errorf("CheckSub %T: %s is a %s, which Sub cannot subtract: list it as kept", a, la[i].path, la[i].v.Type())
			return
		}
		fill(la[i].v, lb[i].v, i, la[i].path)
	}
	r := sub(a, b)
	lr, _ := leaves(reflect.ValueOf(&r).Elem())
	for i := range lr {
		got, av, bv := lr[i].v, la[i].v, lb[i].v
		if isKept(lr[i].path) {
			if !got.Equal(av) {
				t.Errorf("%T.Sub: %s is kept from the receiver, but Sub returned %v (receiver %v, argument %v)", a, lr[i].path, got, av, bv)
			}
			continue
		}
		want := diff(av, bv)
		if got.Equal(want) {
			continue
		}
		why := ""
		switch {
		case got.IsZero():
			why = " (left zero: forgotten?)"
		case got.Equal(av):
			why = " (the receiver's value: forgotten?)"
		case got.Equal(diff(bv, av)):
			why = " (subtracted the wrong way round)"
		}
		t.Errorf("%T.Sub: %s = %v, want %v - %v = %v%s", a, lr[i].path, got, av, bv, want, why)
	}
}

// within reports whether the field at path is field k or inside it.
func within(path, k string) bool {
	return path == k || strings.HasPrefix(path, k+".") || strings.HasPrefix(path, k+"[")
}

// leaf is one field of a struct that is not itself a struct or an array.
type leaf struct {
	path string
	v    reflect.Value // settable
}

// leaves lists v's leaf fields depth first, in declaration order; errs
// names the fields CheckSub cannot fill.
func leaves(v reflect.Value) (out []leaf, errs []string) {
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				p := f.Name
				if path != "" {
					p = path + "." + f.Name
				}
				if !f.IsExported() {
					errs = append(errs, p+" is unexported: CheckSub cannot fill it")
					continue
				}
				walk(v.Field(i), p)
			}
		case reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			}
		case reflect.Bool, reflect.String:
			out = append(out, leaf{path, v})
		default:
			if !numeric(v.Kind()) {
				errs = append(errs, fmt.Sprintf("%s is a %s: CheckSub handles numbers, bools, strings, structs and arrays", path, v.Type()))
				return
			}
			out = append(out, leaf{path, v})
		}
	}
	walk(v, "")
	return out, errs
}

func numeric(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// fill gives leaf i the values a = 3k and b = k with k distinct per leaf
// (k = i+1, cycling below 41 for 8-bit fields), so a-b = 2k is neither
// a, b, 0, b-a nor another field's difference; bools and strings get
// a = true, "a.<path>" and b = false, "b.<path>".
func fill(a, b reflect.Value, i int, path string) {
	k := i + 1
	if a.Type().Size() == 1 {
		k = 1 + i%40
	}
	switch {
	case a.CanInt():
		a.SetInt(int64(3 * k))
		b.SetInt(int64(k))
	case a.CanUint():
		a.SetUint(uint64(3 * k))
		b.SetUint(uint64(k))
	case a.CanFloat():
		a.SetFloat(float64(3 * k))
		b.SetFloat(float64(k))
	case a.Kind() == reflect.Bool:
		a.SetBool(true)
		b.SetBool(false)
	case a.Kind() == reflect.String:
		a.SetString("a." + path)
		b.SetString("b." + path)
	}
}

// diff is a - b in their own type (unsigned values wrap).
func diff(a, b reflect.Value) reflect.Value {
	d := reflect.New(a.Type()).Elem()
	switch {
	case a.CanInt():
		d.SetInt(a.Int() - b.Int())
	case a.CanUint():
		d.SetUint(a.Uint() - b.Uint())
	case a.CanFloat():
		d.SetFloat(a.Float() - b.Float())
	}
	return d
}
