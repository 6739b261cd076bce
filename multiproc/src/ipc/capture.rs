//! The text of a custom serde error, which postcard drops (its `Error::custom` keeps only the
//! fact that there was one). When an encoding or decoding fails that way and the error is not
//! one of multiproc's own (those record their text), the value is walked once more, here, with
//! a serializer or around a deserializer whose error type keeps the text. Only failures pay
//! for it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

/// A custom error's text.
#[derive(Debug)]
pub(super) struct Captured(pub(super) String);

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Captured {}

impl ser::Error for Captured {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Captured(msg.to_string())
    }
}

impl de::Error for Captured {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Captured(msg.to_string())
    }
}

/// The text of the custom error `value`'s serialization raises, if it raises one.
pub(super) fn serialize_error<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(Walk).err().map(|e| e.0)
}

/// The text of the custom error that decoding `T` from `bytes` raises, if it raises one.
pub(super) fn deserialize_error<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Option<String> {
    // A text left by an error that a value's own code caught and dropped is not this one's.
    BACK.with(|b| b.borrow_mut().take());
    let mut postcard = postcard::Deserializer::from_bytes(bytes);
    T::deserialize(Inner(&mut postcard)).err().map(|e| e.0)
}

/// A serializer that writes nothing: it only walks the value, to meet its error.
struct Walk;

macro_rules! walk_scalars {
    ($($name:ident: $t:ty),*) => {$(
        fn $name(self, _: $t) -> Result<(), Captured> {
            Ok(())
        }
    )*};
}

impl ser::Serializer for Walk {
    type Ok = ();
    type Error = Captured;
    type SerializeSeq = Walk;
    type SerializeTuple = Walk;
    type SerializeTupleStruct = Walk;
    type SerializeTupleVariant = Walk;
    type SerializeMap = Walk;
    type SerializeStruct = Walk;
    type SerializeStructVariant = Walk;

    walk_scalars! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8],
        serialize_unit_struct: &'static str
    }

    fn serialize_none(self) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Captured> {
        value.serialize(Walk)
    }
    fn serialize_unit(self) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Captured> {
        value.serialize(Walk)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Captured> {
        value.serialize(Walk)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Walk, Captured> {
        Ok(Walk)
    }
    fn serialize_tuple(self, _: usize) -> Result<Walk, Captured> {
        Ok(Walk)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Walk, Captured> {
        Ok(Walk)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Captured> {
        Ok(Walk)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Walk, Captured> {
        Ok(Walk)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Walk, Captured> {
        Ok(Walk)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Captured> {
        Ok(Walk)
    }
}

macro_rules! walk_compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Walk {
            type Ok = ();
            type Error = Captured;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Captured> {
                value.serialize(Walk)
            }
            fn end(self) -> Result<(), Captured> {
                Ok(())
            }
        }
    )*};
}

walk_compound! {
    SerializeSeq::serialize_element, SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field, SerializeTupleVariant::serialize_field
}

impl ser::SerializeMap for Walk {
    type Ok = ();
    type Error = Captured;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Captured> {
        key.serialize(Walk)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Captured> {
        value.serialize(Walk)
    }
    fn end(self) -> Result<(), Captured> {
        Ok(())
    }
}

macro_rules! walk_fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Walk {
            type Ok = ();
            type Error = Captured;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Captured> {
                value.serialize(Walk)
            }
            fn end(self) -> Result<(), Captured> {
                Ok(())
            }
        }
    )*};
}

walk_fields! { SerializeStruct, SerializeStructVariant }

thread_local! {
    /// The text of a `Captured` error on its way back through postcard, which can only carry a
    /// `SerdeDeCustom`.
    static BACK: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A [`Captured`] error as postcard's, its text kept aside for [`up_any`].
fn back<E: de::Error>(e: Captured) -> E {
    BACK.with(|b| *b.borrow_mut() = Some(e.0.clone()));
    E::custom(e.0)
}

/// A visitor of the value's, offered postcard's values and accessors wrapped.
struct Wrap<V>(V);

macro_rules! forward_visit {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, v: $t) -> Result<V::Value, E> {
            self.0.$name(v).map_err(back)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool: bool, visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64,
        visit_i128: i128, visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64,
        visit_u128: u128, visit_f32: f32, visit_f64: f64, visit_char: char, visit_str: &str,
        visit_borrowed_str: &'de str, visit_string: String, visit_bytes: &[u8],
        visit_borrowed_bytes: &'de [u8], visit_byte_buf: Vec<u8>
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none().map_err(back)
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit().map_err(back)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Inner(d)).map_err(back)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Inner(d)).map_err(back)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Seq(seq)).map_err(back)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Map(map)).map_err(back)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Enum(data)).map_err(back)
    }
}

/// A deserializer (postcard's, or one it hands a visitor for an `Option`'s or a newtype's
/// inside) whose errors keep their text: every call goes to it, with the visitors and
/// accessors wrapped so that the value's own code sees [`Captured`] errors.
struct Inner<D>(D);

/// An error from postcard (or from a deserializer it handed over) as a [`Captured`]: the text
/// [`back`] kept aside when it is one of ours on its way back up, else the error's own.
fn up_any<E: de::Error>(e: E) -> Captured {
    match BACK.with(|b| b.borrow_mut().take()) {
        Some(text) => Captured(text),
        None => Captured(e.to_string()),
    }
}

macro_rules! forward_inner {
    ($($name:ident),*) => {$(
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Captured> {
            self.0.$name(Wrap(visitor)).map_err(up_any)
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Inner<D> {
    type Error = Captured;

    forward_inner! {
        deserialize_any, deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32,
        deserialize_i64, deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32,
        deserialize_u64, deserialize_u128, deserialize_f32, deserialize_f64, deserialize_char,
        deserialize_str, deserialize_string, deserialize_bytes, deserialize_byte_buf,
        deserialize_option, deserialize_unit, deserialize_seq, deserialize_map,
        deserialize_identifier, deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0
            .deserialize_unit_struct(name, Wrap(visitor))
            .map_err(up_any)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0
            .deserialize_newtype_struct(name, Wrap(visitor))
            .map_err(up_any)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0.deserialize_tuple(len, Wrap(visitor)).map_err(up_any)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0
            .deserialize_tuple_struct(name, len, Wrap(visitor))
            .map_err(up_any)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0
            .deserialize_struct(name, fields, Wrap(visitor))
            .map_err(up_any)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0
            .deserialize_enum(name, variants, Wrap(visitor))
            .map_err(up_any)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A seed of the value's, run on [`Inner`] deserializers.
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Inner(d)).map_err(back)
    }
}

struct Seq<A>(A);

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Seq<A> {
    type Error = Captured;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Captured> {
        self.0.next_element_seed(Seed(seed)).map_err(up_any)
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct Map<A>(A);

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Map<A> {
    type Error = Captured;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Captured> {
        self.0.next_key_seed(Seed(seed)).map_err(up_any)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Captured> {
        self.0.next_value_seed(Seed(seed)).map_err(up_any)
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct Enum<A>(A);

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Enum<A> {
    type Error = Captured;
    type Variant = Variant<A::Variant>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Captured> {
        self.0
            .variant_seed(Seed(seed))
            .map(|(value, variant)| (value, Variant(variant)))
            .map_err(up_any)
    }
}

struct Variant<A>(A);

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Variant<A> {
    type Error = Captured;
    fn unit_variant(self) -> Result<(), Captured> {
        self.0.unit_variant().map_err(up_any)
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Captured> {
        self.0.newtype_variant_seed(Seed(seed)).map_err(up_any)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Captured> {
        self.0.tuple_variant(len, Wrap(visitor)).map_err(up_any)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0.struct_variant(fields, Wrap(visitor)).map_err(up_any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom("refused: the disk is on fire"))
        }
    }

    #[derive(Debug)]
    struct Even(u32);

    impl<'de> de::Deserialize<'de> for Even {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = u32::deserialize(d)?;
            if n % 2 == 0 {
                Ok(Even(n))
            } else {
                Err(de::Error::custom(format!("{n} is odd")))
            }
        }
    }

    #[test]
    fn custom_texts_are_captured_where_postcard_drops_them() {
        assert_eq!(
            serialize_error(&(1_u8, vec![Some(Refuses)])).as_deref(),
            Some("refused: the disk is on fire")
        );
        assert_eq!(serialize_error(&(1_u8, "fine")), None);
        let bytes = postcard::to_allocvec(&(7_u8, vec![Some(2_u32), Some(3)])).unwrap();
        assert_eq!(
            deserialize_error::<(u8, Vec<Option<Even>>)>(&bytes).as_deref(),
            Some("3 is odd")
        );
        let bytes = postcard::to_allocvec(&4_u32).unwrap();
        assert_eq!(deserialize_error::<Even>(&bytes), None);
        assert_eq!(postcard::from_bytes::<Even>(&bytes).unwrap().0, 4);
    }
}
