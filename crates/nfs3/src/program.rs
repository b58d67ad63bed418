//! The per-program dispatch enums: `Procedure`, `Arguments` and `Results`
//! generated from one table per RPC program.
//!
//! Design: the server decodes arguments knowing only the procedure number,
//! and the client decodes results knowing which procedure it called. A
//! single table (number, argument type, result type) per program produces
//! the procedure enum and both message enums, so a procedure cannot be
//! added in one direction and forgotten in the other, and the server's
//! dispatch is one exhaustive `match` over `Arguments`.

/// One version of one ONC RPC program: its numbers and message enums.
/// Implemented by [`crate::Nfs3`], [`crate::mount::Mount3`] and
/// [`crate::portmap::Portmap2`]; [`crate::message`] is generic over it.
pub trait RpcProgram {
    /// Program number.
    const PROGRAM: u32;
    /// Program version.
    const VERSION: u32;
    /// The argument enum.
    type Arguments: xdr::Encode;
    /// The result enum.
    type Results: xdr::Encode;

    /// The procedure number of some arguments.
    fn procedure_number(arguments: &Self::Arguments) -> u32;

    /// Decodes arguments; `None` if the procedure number is unknown.
    fn decode_arguments(
        procedure: u32,
        decoder: &mut xdr::Decoder<'_>,
    ) -> Option<Result<Self::Arguments, xdr::DecodeError>>;

    /// Decodes results; `None` if the procedure number is unknown.
    fn decode_results(
        procedure: u32,
        decoder: &mut xdr::Decoder<'_>,
    ) -> Option<Result<Self::Results, xdr::DecodeError>>;
}

/// Generates `Procedure`, `Arguments` and `Results` for one program, and the
/// [`RpcProgram`] marker type.
macro_rules! program {
    (
        $(#[$program_meta:meta])*
        program $program:ident = $program_number:expr, version $version:expr;
        $(
            $(#[$meta:meta])*
            $variant:ident = $number:literal, $arguments:ty, $results:ty;
        )*
    ) => {
        /// The program's procedures.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Procedure {
            $( $(#[$meta])* $variant, )*
        }

        impl Procedure {
            /// Every procedure, in number order.
            pub const ALL: &'static [Procedure] = &[ $( Procedure::$variant, )* ];

            /// The procedure number.
            pub fn to_u32(self) -> u32 {
                match self {
                    $( Procedure::$variant => $number, )*
                }
            }

            /// The procedure for a number; `None` means `PROC_UNAVAIL`.
            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $number => Some(Procedure::$variant), )*
                    _ => None,
                }
            }
        }

        /// A call's arguments, by procedure.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Arguments {
            $( $(#[$meta])* $variant($arguments), )*
        }

        impl Arguments {
            /// The procedure these arguments belong to.
            pub fn procedure(&self) -> Procedure {
                match self {
                    $( Arguments::$variant(_) => Procedure::$variant, )*
                }
            }

            /// Decodes the arguments of `procedure` (server side). Trailing
            /// bytes are left in the decoder for the caller to judge.
            ///
            /// # Errors
            /// A [`xdr::DecodeError`]: answer `GARBAGE_ARGS`.
            pub fn decode(
                procedure: Procedure,
                decoder: &mut xdr::Decoder<'_>,
            ) -> Result<Self, xdr::DecodeError> {
                Ok(match procedure {
                    $( Procedure::$variant => {
                        Arguments::$variant(<$arguments as xdr::Decode>::decode(decoder)?)
                    } )*
                })
            }
        }

        impl xdr::Encode for Arguments {
            fn encode(&self, encoder: &mut xdr::Encoder) {
                match self {
                    $( Arguments::$variant(arguments) => arguments.encode(encoder), )*
                }
            }
        }

        /// A reply's results, by procedure.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Results {
            $( $(#[$meta])* $variant($results), )*
        }

        impl Results {
            /// The procedure these results belong to.
            pub fn procedure(&self) -> Procedure {
                match self {
                    $( Results::$variant(_) => Procedure::$variant, )*
                }
            }

            /// Decodes the results of `procedure` (client side).
            ///
            /// # Errors
            /// A [`xdr::DecodeError`]: the reply is garbage.
            pub fn decode(
                procedure: Procedure,
                decoder: &mut xdr::Decoder<'_>,
            ) -> Result<Self, xdr::DecodeError> {
                Ok(match procedure {
                    $( Procedure::$variant => {
                        Results::$variant(<$results as xdr::Decode>::decode(decoder)?)
                    } )*
                })
            }
        }

        impl xdr::Encode for Results {
            fn encode(&self, encoder: &mut xdr::Encoder) {
                match self {
                    $( Results::$variant(results) => results.encode(encoder), )*
                }
            }
        }

        $(#[$program_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $program;

        impl $crate::program::RpcProgram for $program {
            const PROGRAM: u32 = $program_number;
            const VERSION: u32 = $version;
            type Arguments = Arguments;
            type Results = Results;

            fn procedure_number(arguments: &Arguments) -> u32 {
                arguments.procedure().to_u32()
            }

            fn decode_arguments(
                procedure: u32,
                decoder: &mut xdr::Decoder<'_>,
            ) -> Option<Result<Arguments, xdr::DecodeError>> {
                Procedure::from_u32(procedure).map(|procedure| Arguments::decode(procedure, decoder))
            }

            fn decode_results(
                procedure: u32,
                decoder: &mut xdr::Decoder<'_>,
            ) -> Option<Result<Results, xdr::DecodeError>> {
                Procedure::from_u32(procedure).map(|procedure| Results::decode(procedure, decoder))
            }
        }
    };
}

pub(crate) use program;
