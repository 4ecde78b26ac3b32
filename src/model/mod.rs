//! Pure types and functions: what Patroni, etcd and HAProxy say, what the probes measured, the
//! health of each target, the verdict. Nothing here does I/O or knows about tasks and locks, so
//! every rule can be checked in a plain unit test (and `tests/architecture.rs` keeps it so).

/// A closed set of label values: `ALL` (every value exists as a series from the start, so that
/// `increase()` sees the first event), `as_str` (the label value), `index` (for per-value
/// arrays of `COUNT` entries) and `Display`.
macro_rules! label_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            pub const COUNT: usize = Self::ALL.len();

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            /// Position in `ALL`.
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// From its label value (the state file keeps them so).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let label = String::deserialize(d)?;
                Self::ALL.iter().copied().find(|v| v.as_str() == label).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown {} `{label}`", stringify!($name)))
                })
            }
        }
    };
}
pub(crate) use label_enum;

pub mod address;
pub mod etcd;
pub mod haproxy;
pub mod hist;
pub mod patroni;
pub mod probe;
pub mod source;
pub mod text;
pub mod verdict;
pub mod vip;

#[cfg(test)]
mod tests {
    label_enum! {
        /// A test enum.
        pub enum Colour {
            Red = "red",
            DarkBlue = "dark_blue",
        }
    }

    #[test]
    fn label_enums_list_index_and_name_their_values() {
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
        assert_eq!(Colour::COUNT, 2);
        assert_eq!((Colour::DarkBlue.index(), Colour::DarkBlue.as_str()), (1, "dark_blue"));
        assert_eq!(Colour::Red.to_string(), "red");
        assert_eq!(serde_json::to_string(&Colour::DarkBlue).unwrap(), "\"dark_blue\"");
    }
}
