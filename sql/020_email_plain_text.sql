-- Text from CMOP in the tracking email is plain text. VA Notify renders the email as markdown and
-- turns bare URLs into links, so escaping markdown characters alone let a carrier, tracking number,
-- Rx number or drug name add a line break (a heading, a list, a paragraph), a link or a clickable
-- address. A value is now reduced to what a carrier's name, a tracking number or a drug's print
-- name is made of: letters, digits, spaces and , / % ' & + ( ) - and a decimal point between
-- digits (0.25MG); anything else, line breaks included, becomes a space. With no colon, no at sign
-- and no dot beside a letter, nothing left can form a URL (`https://`, `www.`) or an address, and
-- the markdown characters that remain are escaped.
create function notify_plain_text(value text) returns text
language sql immutable parallel safe as $$
  select notify_markdown_escape(btrim(regexp_replace(
    regexp_replace(
      regexp_replace(coalesce(value, ''), '[^[:alnum:] .,/%''&+()-]', ' ', 'g'),
      '(?<![0-9])\.|\.(?![0-9])', ' ', 'g'),
    ' {2,}', ' ', 'g')))
$$;

create or replace function carrier_display_name(carrier text) returns text
language sql immutable parallel safe as $$
  select case upper(coalesce(carrier, ''))
    when 'UPS' then 'UPS'
    when 'USPS' then 'USPS'
    when 'FEDEX' then 'FedEx'
    when 'DHL' then 'DHL'
    when 'UNK' then 'Carrier not provided'
    else coalesce(nullif(notify_plain_text(carrier), ''), 'Carrier not provided')
  end
$$;

create or replace function package_heading(carrier text, tracking_number text) returns text
language sql immutable parallel safe as $$
  select '**' || carrier_display_name(carrier) || '** tracking number: ' ||
    case
      when tracking_link(carrier, tracking_number) is not null
        then '[' || tracking_number || '](' || tracking_link(carrier, tracking_number) || ')'
      else coalesce(nullif(notify_plain_text(tracking_number), ''), 'not provided yet')
    end
$$;

-- The last four letters or digits of the Rx number: nothing else of it is shown.
create or replace function prescription_line(rx_number text, drug_name text, include_drug_name boolean) returns text
language sql immutable parallel safe as $$
  select '- Prescription ending in ' || right(regexp_replace(coalesce(rx_number, ''), '[^[:alnum:]]', '', 'g'), 4) ||
    case when include_drug_name and notify_plain_text(drug_name) <> '' then ': ' || notify_plain_text(drug_name) else '' end
$$;
