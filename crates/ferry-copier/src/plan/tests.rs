use expect_test::expect;

use super::*;

fn ident(s: &str) -> SqlIdent {
    SqlIdent::new(s).unwrap()
}

fn col(name: &str, ty: &str) -> Column {
    Column {
        name: ident(name),
        ty: ty.into(),
        collation: None,
    }
}

fn plan() -> TablePlan {
    let key = vec![col("tenant_id", "text"), col("id", "bigint")];
    TablePlan {
        source: Table {
            schema: ident("public"),
            name: ident("orders"),
        },
        target: Table {
            schema: ident("moved"),
            name: ident("orders"),
        },
        columns: vec![
            col("tenant_id", "text"),
            col("id", "bigint"),
            col("amount", "numeric(12,2)"),
            col("updated_at", "timestamp with time zone"),
        ],
        tenant: ident("tenant_id"),
        tenant_type: ferry_domain::TenantKeyType::new("text", "text").unwrap(),
        version: ident("updated_at"),
        order: key[1..].to_vec(),
        key,
    }
}

#[test]
fn statements() {
    let p = plan();
    let (from, to) = p.sides(CopyDirection::Forward);
    let all = [
        p.select_batch(from, false, true),
        p.select_batch(from, true, true),
        p.upsert(to),
        p.checksum(to, true, true),
        p.digests(from, false, true),
        p.delete_if_unchanged(to),
        p.delete_batch(from),
    ]
    .join("\n");
    expect![[r#"
        SELECT to_json(t)::text, t."id"::text FROM "public"."orders" AS t WHERE t."tenant_id" = CAST($1 AS text) ORDER BY t."id" LIMIT $2 FOR SHARE OF t
        SELECT to_json(t)::text, t."id"::text FROM "public"."orders" AS t WHERE t."tenant_id" = CAST($1 AS text) AND (t."id") > (CAST($2 AS bigint)) ORDER BY t."id" LIMIT $3 FOR SHARE OF t
        INSERT INTO "moved"."orders" ("tenant_id", "id", "amount", "updated_at") SELECT "tenant_id", "id", "amount", "updated_at" FROM json_populate_recordset(NULL::"moved"."orders", $1::json) ON CONFLICT ("tenant_id", "id") DO UPDATE SET "amount" = EXCLUDED."amount", "updated_at" = EXCLUDED."updated_at" WHERE "moved"."orders"."updated_at" < EXCLUDED."updated_at"
        SELECT count(*)::bigint, coalesce(md5(string_agg(md5(ROW(t."tenant_id", t."id", t."amount", t."updated_at")::text), '' ORDER BY t."id")), '') FROM "moved"."orders" AS t WHERE t."tenant_id" = CAST($1 AS text) AND (t."id") > (CAST($2 AS bigint)) AND (t."id") <= (CAST($3 AS bigint))
        SELECT json_build_array(t."id"::text)::text, md5(ROW(t."tenant_id", t."id", t."amount", t."updated_at")::text), t.xmin::text FROM "public"."orders" AS t WHERE t."tenant_id" = CAST($1 AS text) AND (t."id") <= (CAST($2 AS bigint)) ORDER BY t."id"
        DELETE FROM "moved"."orders" AS t WHERE t."tenant_id" = CAST($1 AS text) AND (t."id") = (CAST($2 AS bigint)) AND t.xmin::text = $3
        DELETE FROM "public"."orders" WHERE ctid = ANY(ARRAY(SELECT ctid FROM "public"."orders" AS t WHERE t."tenant_id" = CAST($1 AS text) LIMIT $2))"#]]
    .assert_eq(&all);
}

#[test]
fn reverse_swaps_sides() {
    let p = plan();
    let (from, to) = p.sides(CopyDirection::Reverse);
    assert_eq!(from.to_string(), "moved.orders");
    assert_eq!(to.to_string(), "public.orders");
}

#[test]
fn only_plain_type_names_are_spliced() {
    assert!(types::type_is_safe("timestamp with time zone"));
    assert!(types::type_is_safe("numeric(12,2)"));
    assert!(types::type_is_safe("text[]"));
    assert!(!types::type_is_safe("text); drop table x; --"));
    assert!(!types::type_is_safe("\"weird type\""));
    assert!(!types::type_is_safe(""));
}
