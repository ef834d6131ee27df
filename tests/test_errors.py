"""Behaviour spec for the engine's errors: each says what went wrong, where, and what to do.

Every test pins the exception type (engine.errors classes, which also subclass the builtin
exception a Python user would expect) and the salient parts of the message.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import engine as jax
import engine.numpy as jnp
from engine.errors import DifferentiationError, ShapeError

X = jnp.array([1.0, 2.0])


# ----------------------------------------------------------------------------- grad's output


def test_grad_of_non_scalar_output_names_the_shape_and_suggests_a_fix():
    with pytest.raises(DifferentiationError, match=r"scalar-output.*shape \(2,\).*\.sum\(\).*jacrev"):
        jax.grad(lambda x: x * 2)(X)


def test_grad_of_matrix_output_names_the_shape():
    with pytest.raises(DifferentiationError, match=r"shape \(2, 3\)"):
        jax.grad(lambda x: jnp.ones((2, 3)) * x)(1.0)


def test_grad_of_function_returning_a_tuple_says_so_and_suggests_has_aux_or_jacrev():
    with pytest.raises(DifferentiationError,
                       match=r"single scalar output.*PyTreeDef\(\(\*, \*\)\).*has_aux=True.*jacrev"):
        jax.grad(lambda x: (jnp.sum(x), jnp.sum(x)))(X)


def test_grad_of_integer_output_is_refused():
    with pytest.raises(DifferentiationError, match=r"floating-point output.*int32"):
        jax.grad(lambda x: jnp.sum(x).astype(jnp.int32))(X)


def test_value_and_grad_checks_the_output_too():
    with pytest.raises(DifferentiationError, match=r"shape \(2,\)"):
        jax.value_and_grad(lambda x: x)(X)


# ----------------------------------------------------------------------------- grad's inputs


def test_grad_of_integer_input_is_refused_with_reason_and_allow_int():
    with pytest.raises(DifferentiationError,
                       match=r"grad requires floating-point inputs, but argument 0 has dtype int32\. "
                             r"Integer and boolean values have no derivative.*astype.*allow_int=True"):
        jax.grad(lambda x: jnp.sum(x * 1.0))(jnp.arange(3))


def test_grad_of_python_int_is_refused():
    with pytest.raises(DifferentiationError, match=r"argument 0 has dtype int32.*allow_int"):
        jax.grad(lambda x: x * 1.0)(3)


def test_grad_of_bool_input_is_refused():
    with pytest.raises(DifferentiationError, match=r"argument 0 has dtype bool.*allow_int"):
        jax.grad(lambda x: jnp.sum(x * 1.0))(jnp.array([True, False]))


def test_grad_of_integer_leaf_in_pytree_names_the_leaf_path():
    params = {"w": X, "layers": [X, jnp.arange(2)]}
    with pytest.raises(DifferentiationError, match=re.escape("argument 0 at leaf ['layers'][1] has dtype int32")):
        jax.grad(lambda p: jnp.sum(p["w"]))(params)


def test_grad_of_integer_leaf_names_the_actual_argument_number_with_argnums_tuple():
    with pytest.raises(DifferentiationError, match=re.escape("argument 2 at leaf ['n'] has dtype int32")):
        jax.grad(lambda a, b, c: a * b, argnums=(0, 2))(1.0, 2.0, {"n": jnp.arange(2)})


@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_jacobians_refuse_integer_inputs_naming_themselves(transform):
    with pytest.raises(DifferentiationError, match=rf"{transform} requires floating-point inputs.*int32"):
        getattr(jax, transform)(lambda x: x * 1.0)(jnp.arange(2))


def test_grad_of_a_non_numeric_input_is_a_type_error_naming_the_argument():
    with pytest.raises(TypeError, match=r"argument 0: str is not a valid array value"):
        jax.grad(lambda a: a)("hi")


def test_argnums_out_of_range_says_how_many_positional_arguments_were_given():
    with pytest.raises(DifferentiationError,
                       match=r"grad: argnums 2 is out of range: the function was called with 2 positional "
                             r"arguments \(valid argnums are 0\.\.1\)"):
        jax.grad(lambda a, b: a * b, argnums=2)(1.0, 2.0)


def test_argnums_naming_a_keyword_argument_is_out_of_range():
    with pytest.raises(DifferentiationError, match=r"argnums 1 is out of range.*1 positional argument \(.*"
                                                   r"Pass the argument positionally"):
        jax.grad(lambda a, b=1.0: a * b, argnums=1)(1.0, b=2.0)


def test_argnums_out_of_range_in_jacrev_names_jacrev():
    with pytest.raises(DifferentiationError, match=r"jacrev: argnums 3 is out of range"):
        jax.jacrev(lambda a: a, argnums=3)(1.0)


def test_argnums_must_be_ints_and_not_empty():
    with pytest.raises(TypeError, match=r"argnums must be ints, got str"):
        jax.grad(lambda a: a, argnums="0")(1.0)
    with pytest.raises(ValueError, match=r"argnums must name at least one argument"):
        jax.grad(lambda a: a, argnums=())(1.0)


# ----------------------------------------------------------------------------- has_aux


@pytest.mark.parametrize("returned, kind", [(lambda x: x * 2, "Tracer"), (lambda x: (x, x, x), "tuple")])
def test_has_aux_function_must_return_a_pair(returned, kind):
    with pytest.raises(DifferentiationError,
                       match=rf"has_aux=True the function must return a pair \(output, auxiliary data\), "
                             rf"but it returned {kind}"):
        jax.grad(returned, has_aux=True)(1.0)


@pytest.mark.parametrize("call", [
    lambda f: jax.value_and_grad(f, has_aux=True)(1.0),
    lambda f: jax.jvp(f, (1.0,), (1.0,), has_aux=True),
    lambda f: jax.vjp(f, 1.0, has_aux=True),
    lambda f: jax.jacrev(f, has_aux=True)(1.0),
], ids=["value_and_grad", "jvp", "vjp", "jacrev"])
def test_has_aux_pair_is_required_by_every_transformation(call):
    with pytest.raises(DifferentiationError, match=r"must return a pair"):
        call(lambda x: x * 2)


# ----------------------------------------------------------------------------- jvp / vjp arguments


def test_jvp_primals_and_tangents_must_be_tuples():
    with pytest.raises(TypeError, match=r"primals and tangents must be tuples or lists.*got Array and Array"):
        jax.jvp(lambda a: a, X, X)


def test_jvp_needs_one_tangent_per_primal():
    with pytest.raises(ValueError, match=r"2 primals but 1 tangents"):
        jax.jvp(lambda a, b: a, (X, X), (X,))


def test_jvp_tangent_tree_must_match_primal_tree_dict_keys():
    with pytest.raises(ValueError, match=r"same tree structure.*keys only in the first: \['a'\].*"
                                         r"keys only in the second: \['b'\]"):
        jax.jvp(lambda p: p["a"], ({"a": X},), ({"b": X},))


def test_jvp_tangent_tree_must_match_primal_tree_tuple_vs_list():
    with pytest.raises(ValueError, match=r"same tree structure.*a tuple of 2 children vs a list of 2 children"):
        jax.jvp(lambda p: p[0], ((X, X),), ([X, X],))


def test_jvp_tangent_shape_must_match_primal_shape():
    with pytest.raises(ValueError, match=r"tangent 0 has shape \(3,\) but its primal has shape \(2,\)"):
        jax.jvp(lambda a: a, (X,), (jnp.ones(3),))


def test_jvp_tangent_dtype_must_match_primal_dtype():
    with pytest.raises(TypeError, match=r"tangent 0 has dtype int32 but its primal has dtype float32"):
        jax.jvp(lambda a: a, (X,), (jnp.ones(2, dtype=jnp.int32),))


def test_vjp_cotangent_must_have_the_output_structure():
    _, pullback = jax.vjp(lambda a: (a, a), X)
    with pytest.raises(ValueError, match=r"cotangent must have the structure of the function's output.*"
                                         r"a tuple of 2 children vs a leaf"):
        pullback(X)


def test_vjp_cotangent_dict_keys_must_match():
    _, pullback = jax.vjp(lambda a: {"u": a}, X)
    with pytest.raises(ValueError, match=r"keys only in the first: \['u'\]; keys only in the second: \['v'\]"):
        pullback({"v": X})


def test_vjp_cotangent_must_have_the_output_shape():
    _, pullback = jax.vjp(lambda a: a, X)
    with pytest.raises(ValueError, match=r"cotangent leaf 0 has shape \(3,\) but the output has shape \(2,\)"):
        pullback(jnp.ones(3))


# ----------------------------------------------------------------------------- tracers misused


def test_unknown_attribute_on_tracer_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match=r"traced array Traced<f32\[\]> has no attribute 'foo'.*engine\.numpy"):
        jax.grad(lambda x: x.foo)(1.0)


@pytest.mark.parametrize("convert, kind", [(bool, "bool"), (float, "float"), (int, "int")])
def test_converting_a_tracer_to_python_inside_make_graph_is_a_concretization_error(convert, kind):
    with pytest.raises(jax.ConcretizationError,
                       match=rf"converted to a Python {kind} inside a function being traced abstractly.*"
                             r"Python control flow cannot depend on it.*jnp\.where.*static_argnums"):
        jax.make_graph(lambda x: convert(x))(1.0)


def test_python_if_on_a_tracer_inside_jit_is_a_concretization_error():
    with pytest.raises(jax.ConcretizationError, match=r"Python bool.*control flow"):
        jax.jit(lambda x: x if x > 0 else -x)(1.0)


def test_concretization_error_is_also_a_type_error():
    with pytest.raises(TypeError):
        jax.jit(lambda x: float(x))(1.0)


def test_item_and_tolist_inside_jit_are_concretization_errors():
    with pytest.raises(jax.ConcretizationError):
        jax.jit(lambda x: x.item())(1.0)
    with pytest.raises(jax.ConcretizationError):
        jax.jit(lambda x: x.tolist())(X)


def test_traced_shape_inside_jit_is_a_concretization_error():
    with pytest.raises(jax.ConcretizationError, match=r"Python int"):
        jax.jit(lambda n: jnp.zeros(n))(2)


def test_traced_slice_bound_inside_jit_is_a_concretization_error():
    with pytest.raises(jax.ConcretizationError, match=r"slice stop is a traced value.*integer index array"):
        jax.jit(lambda x, n: x[:n])(X, 1)


def test_traced_boolean_mask_inside_jit_is_a_concretization_error():
    with pytest.raises(jax.ConcretizationError, match=r"boolean mask indexing with a traced mask.*jnp\.where"):
        jax.jit(lambda x: x[x > 1])(X)


@pytest.mark.parametrize("numpy_fn", [np.sin, np.exp, np.asarray], ids=["sin", "exp", "asarray"])
def test_passing_a_tracer_to_numpy_raises_tracer_array_conversion_error(numpy_fn):
    with pytest.raises(jax.TracerArrayConversionError,
                       match=r"passed to a NumPy function.*derivative.*silently lost.*engine\.numpy"):
        jax.grad(lambda x: numpy_fn(x) * 1.0)(1.0)


def test_passing_a_tracer_to_numpy_under_jit_raises_too():
    with pytest.raises(jax.TracerArrayConversionError, match=r"import engine\.numpy as jnp"):
        jax.jit(lambda x: np.exp(x))(X)


def test_numpy_reductions_dispatch_to_the_engine_as_in_jax():
    # np.sum(x) calls x.sum(axis=None, dtype=None, out=None): it works, and records the operation.
    assert isinstance(np.sum(X), jax.Array)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda x: np.mean(x**2))(X)), [1.0, 2.0])
    with pytest.raises(TypeError, match=r"`out` argument is not supported"):
        np.sum(X, out=np.zeros(()))


def test_tracer_escaped_from_grad_raises_escaped_tracer_error_when_used():
    leaked = []
    jax.grad(lambda x: leaked.append(x) or x * 2)(1.0)
    with pytest.raises(jax.EscapedTracerError,
                       match=r"traced value \(Traced<f32\[\]>\) from a transformation that has already finished "
                             r"was used in `add`.*must be returned from it"):
        leaked[0] + 1


def test_tracer_escaped_from_jit_raises_escaped_tracer_error_in_a_later_transformation():
    leaked = []

    def f(x):
        leaked.append(jnp.sin(x))
        return x

    jax.jit(f)(1.0)
    with pytest.raises(jax.EscapedTracerError, match=r"used in `mul`"):
        jax.grad(lambda y: leaked[0] * y)(1.0)
    with pytest.raises(jax.EscapedTracerError, match=r"used in `cos`"):
        jnp.cos(leaked[0])


def test_tracers_are_unhashable():
    with pytest.raises(TypeError, match=r"traced arrays are unhashable"):
        jax.grad(lambda x: {x: 1} and x)(1.0)


# ----------------------------------------------------------------------------- shapes


def test_add_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"`add` got operands of shapes \(3,\) and \(4,\), which do not broadcast"):
        jnp.ones(3) + jnp.ones(4)


def test_shape_mismatch_inside_grad_names_both_shapes():
    with pytest.raises(ShapeError, match=r"`mul` got operands of shapes \(2,\) and \(3, 3\)"):
        jax.grad(lambda x: jnp.sum(x * jnp.ones((3, 3))))(X)


def test_shape_errors_are_value_errors():
    with pytest.raises(ValueError):
        jnp.ones(3) - jnp.ones(4)


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"matmul: the contracted dimensions differ: \(2, 3\) @ \(4, 5\) \(3 != 4\)"):
        jnp.ones((2, 3)) @ jnp.ones((4, 5))
    with pytest.raises(ShapeError, match=r"\(2, 3\) @ \(4,\)"):
        jax.grad(lambda m: jnp.sum(m @ jnp.ones(4)))(jnp.ones((2, 3)))


def test_matmul_refuses_scalars():
    with pytest.raises(ShapeError, match=r"matmul does not accept scalars; use multiply"):
        jnp.matmul(X, 2.0)


def test_reshape_to_an_incompatible_shape_names_both():
    with pytest.raises(ShapeError, match=r"cannot reshape an array of shape \(6,\) \(6 elements\) into \(4, 2\)"):
        jnp.ones(6).reshape(4, 2)
    with pytest.raises(ShapeError, match=r"cannot reshape an array of shape \(6,\) into \(4, -1\)"):
        jnp.ones(6).reshape(4, -1)
    with pytest.raises(ShapeError, match=r"only specify one unknown dimension"):
        jnp.ones(6).reshape(-1, -1)


def test_reshape_error_inside_grad():
    with pytest.raises(ShapeError, match=r"\(6,\).*\(4, 2\)"):
        jax.grad(lambda x: jnp.sum(x.reshape(4, 2)))(jnp.ones(6))


def test_other_shape_errors_name_the_shapes():
    with pytest.raises(ShapeError, match=r"array 1 has shape \(2, 4\).*array 0's shape \(2, 3\)"):
        jnp.concatenate([jnp.ones((2, 3)), jnp.ones((2, 4))])
    with pytest.raises(ShapeError, match=r"same shape, got \[\(2,\), \(3,\)\]"):
        jnp.stack([jnp.ones(2), jnp.ones(3)])
    with pytest.raises(ShapeError, match=r"shapes \(3,\) and \(2, 4\)"):
        jnp.broadcast_to(jnp.ones(3), (2, 4))
    with pytest.raises(ShapeError, match=r"index 'j' has size 3 and 4"):
        jnp.einsum("ij,jk->ik", jnp.ones((2, 3)), jnp.ones((4, 2)))
    with pytest.raises(ShapeError, match=r"axis 2 is out of bounds for an array of 1 dimensions"):
        jnp.sum(X, axis=2)


def test_indexing_errors():
    with pytest.raises(IndexError, match=r"index 5 is out of bounds for axis 0 with size 2"):
        X[5]
    with pytest.raises(IndexError, match=r"too many indices for an array of shape \(2,\)"):
        X[0, 0]
    with pytest.raises(IndexError, match=r"integer or boolean dtype, got float32"):
        X[jnp.array([0.5])]


# ----------------------------------------------------------------------------- custom_vjp and config


def test_custom_vjp_without_rule_says_to_call_defvjp():
    def identity(x):
        return x

    with pytest.raises(DifferentiationError, match=r"custom_vjp function identity has no rule: call "
                                                   r"identity\.defvjp\(fwd, bwd\) first"):
        jax.grad(jax.custom_vjp(identity))(1.0)


def test_custom_vjp_backward_must_return_one_cotangent_per_argument():
    def mul(x, y):
        return x * y

    f = jax.custom_vjp(mul)
    f.defvjp(lambda x, y: (x * y, None), lambda res, g: (g,))
    with pytest.raises(DifferentiationError, match=r"backward function of mul must return a tuple with one "
                                                   r"cotangent per positional argument \(2\), got tuple of length 1"):
        jax.grad(f)(1.0, 2.0)


def test_custom_vjp_backward_must_return_a_tuple():
    def ident(x):
        return x

    f = jax.custom_vjp(ident)
    f.defvjp(lambda x: (x, None), lambda res, g: g)
    with pytest.raises(DifferentiationError, match=r"must return a tuple.*got Array"):
        jax.grad(f)(1.0)


def test_custom_vjp_backward_cotangent_structure_must_match_the_argument():
    def first(p):
        return p["a"]

    f = jax.custom_vjp(first)
    f.defvjp(lambda p: (p["a"], None), lambda res, g: ({"a": g, "b": g},))
    with pytest.raises(DifferentiationError, match=r"cotangent whose structure differs from its argument's"):
        jax.grad(f)({"a": 1.0})


def test_custom_vjp_has_no_forward_mode():
    f = jax.custom_vjp(lambda x: x)
    f.defvjp(lambda x: (x, None), lambda res, g: (g,))
    with pytest.raises(DifferentiationError, match=r"no forward-mode derivative rule.*Use reverse mode"):
        jax.jvp(f, (1.0,), (1.0,))


def test_unknown_config_option_lists_the_known_ones():
    with pytest.raises(AttributeError, match=r"unknown configuration option 'jax_enable_fp128'; known options: "
                                             r".*jax_enable_x64"):
        jax.config.update("jax_enable_fp128", True)
