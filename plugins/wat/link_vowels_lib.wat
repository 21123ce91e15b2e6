;; is_vowel for link_vowels_main.wat (linked as "vowels").
(module
  (func (export "is_vowel") (param $c i32) (result i32)
    (local.set $c (i32.or (local.get $c) (i32.const 0x20)))
    (i32.or (i32.or (i32.or (i32.eq (local.get $c) (i32.const 97)) (i32.eq (local.get $c) (i32.const 101)))
                    (i32.or (i32.eq (local.get $c) (i32.const 105)) (i32.eq (local.get $c) (i32.const 111))))
            (i32.eq (local.get $c) (i32.const 117)))))
