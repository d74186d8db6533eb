<?php
// The IdP itself: entity id {base}saml2/idp/metadata.php, signing with the
// key pair the test generated into SSP_WORK_DIR.
$metadata['__DYNAMIC:1__'] = [
    'host' => '__DEFAULT__',
    'privatekey' => 'idp.key',
    'certificate' => 'idp.crt',
    'auth' => 'test-users',
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    // Assertions are signed (the default); the Response itself is signed
    // too when the test asks for it.
    'saml20.sign.assertion' => true,
    'saml20.sign.response' => getenv('SSP_SIGN_RESPONSE') === '1',
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
];
